"""Files an attacker with write access to a store could plant: checkpoints that run code."""
from __future__ import annotations

import io
import os
import shlex

import numpy as np
import torch


class RunsCode:
    """Unpickling this runs a shell command: it creates ``marker`` (harmless, detectable)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def plant_checkpoint(store, path: str, marker) -> None:
    """Write a client-like torch checkpoint carrying a :class:`RunsCode` at ``path``, behind
    the store's back (its ``save`` refuses such objects)."""
    buffer = io.BytesIO()
    torch.save({"round": 1, "global_weights": torch.zeros(3), "shared": RunsCode(marker)}, buffer)
    store.write_bytes(path, buffer.getvalue())


def plant_array_checkpoint(store, path: str, marker) -> None:
    """Write a coordinator-like ``.npz`` whose object array unpickles to a :class:`RunsCode`."""
    hostile = np.empty(1, dtype=object)
    hostile[0] = RunsCode(marker)
    buffer = io.BytesIO()
    np.savez(buffer, round=np.array(1), global_weights=np.zeros(3, np.float32), shared=hostile)
    store.write_bytes(path, buffer.getvalue())
