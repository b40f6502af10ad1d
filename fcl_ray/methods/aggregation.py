"""Weights as one flat float32 vector, and FedAvg as a pure function of (vector, n) pairs.

A flat vector crosses Ray's object store as a single zero-copy numpy buffer, and averaging
it is one vectorised operation per client instead of a Python loop over ~100 tensors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class WeightLayout:
    """Names, shapes and dtypes of a state_dict, to flatten it and restore it."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.names = list(state)
        self.shapes = [tuple(t.shape) for t in state.values()]
        self.dtypes = [t.dtype for t in state.values()]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.total = sum(self.sizes)

    def flatten(self, state: dict[str, torch.Tensor]) -> np.ndarray:
        return torch.cat([state[n].detach().reshape(-1).float().cpu() for n in self.names]).numpy()

    def unflatten(self, vector: np.ndarray) -> dict[str, torch.Tensor]:
        if vector.shape != (self.total,):
            raise ValueError(f"weight vector has shape {vector.shape}, layout expects ({self.total},)")
        flat = torch.from_numpy(np.array(vector, dtype=np.float32, copy=True))
        out, start = {}, 0
        for name, shape, dtype, size in zip(self.names, self.shapes, self.dtypes, self.sizes):
            piece = flat[start:start + size].reshape(shape)
            out[name] = piece.round().to(dtype) if not dtype.is_floating_point else piece.to(dtype)
            start += size
        return out


def fedavg(vectors: Sequence[np.ndarray], n_samples: Sequence[float]) -> np.ndarray:
    """Average of the clients' weight vectors, weighted by their number of samples.

    The order of ``vectors`` must be fixed (by client id), never by arrival, so the floating
    point sum and hence the result are reproducible.
    """
    if not vectors:
        raise ValueError("fedavg needs at least one update")
    if len(vectors) != len(n_samples):
        raise ValueError("one sample count per update is needed")
    total = float(sum(n_samples))
    if total <= 0:
        raise ValueError("sample counts must add up to more than zero")
    out = np.zeros_like(vectors[0], dtype=np.float64)
    for vec, n in zip(vectors, n_samples):
        out += (n / total) * vec
    return out.astype(np.float32)
