"""Round checkpoints on a local path or any URI fsspec can write (s3://, gs://, ...).

Layout under the root, per pre-training phase (method and fold):

    <phase>/round-0003/coordinator.pt     global weights, shared features, round, participants
    <phase>/round-0003/client-0.pt        each client's own state (optimiser, bank, RNG, nets)
    <phase>/LATEST                        {"round": 3}: written last, so a round is complete
                                          only once every file of it is there

Every file is written to a temporary name and then renamed, so a crash mid-write never
leaves a half file where a reader looks.
"""
from __future__ import annotations

import io
import json
from typing import Any, Optional

import fsspec
import torch


class CheckpointStore:
    def __init__(self, root: str, keep: int = 2):
        self.url = root                      # as given: what another process opens it by
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.keep = keep
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def round_dir(self, phase: str, round_index: int) -> str:
        return self._path(phase, f"round-{round_index:04d}")

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic write: temporary file, then rename."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as handle:
            handle.write(data)
        self.fs.mv(tmp, path)

    def save(self, path: str, obj: Any) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.write_bytes(path, buffer.getvalue())

    def load(self, path: str) -> Any:
        with self.fs.open(path, "rb") as handle:
            return torch.load(io.BytesIO(handle.read()), weights_only=False)

    def mark_complete(self, phase: str, round_index: int) -> None:
        """Publish a round (after all its files are written) and drop older rounds."""
        self.write_bytes(self._path(phase, "LATEST"), json.dumps({"round": round_index}).encode())
        for old in range(round_index - self.keep, 0, -1):
            path = self.round_dir(phase, old)
            if not self.fs.exists(path):
                break
            self.fs.rm(path, recursive=True)

    def latest(self, phase: str) -> Optional[int]:
        """The last complete round of a phase, or None."""
        path = self._path(phase, "LATEST")
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return int(json.loads(handle.read())["round"])
