"""Feature banks: per-partition ring buffers of momentum features, and uniform sampling.

Pure PyTorch, no Ray: remote features are passed in as arguments (as MoCo passes its queue),
never fetched from inside.
"""
from __future__ import annotations

from typing import Iterable

import torch


class FeatureBank:
    """One ring buffer per partition (MoCo's queue, split by partition)."""

    def __init__(self, partitions: int, capacity: int, dim: int, device: str | torch.device = "cpu"):
        self.capacity = capacity
        self.features = torch.zeros(partitions, capacity, dim, device=device)
        self.pointer = [0] * partitions
        self.count = [0] * partitions

    def push(self, features: torch.Tensor, partitions: torch.Tensor) -> None:
        """Enqueue rows, each into its partition's buffer, overwriting the oldest."""
        features = features.detach()
        for p in partitions.unique().tolist():
            rows = features[partitions == p][-self.capacity:]
            idx = (self.pointer[p] + torch.arange(len(rows))) % self.capacity
            self.features[p, idx.to(self.features.device)] = rows.to(self.features.device)
            self.pointer[p] = (self.pointer[p] + len(rows)) % self.capacity
            self.count[p] = min(self.capacity, self.count[p] + len(rows))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All filled rows and their partition labels: (M, d), (M,)."""
        feats = [self.features[p, :n] for p, n in enumerate(self.count)]
        parts = [torch.full((n,), p, dtype=torch.long) for p, n in enumerate(self.count)]
        return torch.cat(feats), torch.cat(parts).to(self.features.device)

    def __len__(self) -> int:
        return sum(self.count)


def sample_features(features: torch.Tensor, partitions: torch.Tensor, k: int,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw min(k, M) rows uniformly without replacement."""
    if len(features) <= k:
        return features, partitions
    idx = torch.randperm(len(features), generator=generator)[:k].to(features.device)
    return features[idx], partitions[idx]


def merge_remote(shared: dict[int, tuple], exclude: int | None,
                 device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor] | None:
    """Concatenate the features other clients shared (ids sorted, so order is fixed)."""
    chunks = [shared[c] for c in sorted(shared) if c != exclude and shared[c] is not None]
    if not chunks:
        return None
    # torch.tensor copies: arrays from Ray's object store are read-only.
    feats = torch.cat([torch.tensor(f, dtype=torch.float32) for f, _ in chunks]).to(device)
    parts = torch.cat([torch.tensor(p, dtype=torch.long) for _, p in chunks]).to(device)
    return feats, parts


def concat_banks(pieces: Iterable[tuple[torch.Tensor, torch.Tensor] | None]):
    """Q = local bank U remote banks, skipping empty pieces."""
    pieces = [p for p in pieces if p is not None and len(p[0])]
    return torch.cat([f for f, _ in pieces]), torch.cat([p for _, p in pieces])
