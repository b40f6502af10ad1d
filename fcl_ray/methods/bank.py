"""Feature banks: per-partition ring buffers of momentum features, and uniform sampling.

Pure PyTorch, no Ray: remote features are passed in as arguments (as MoCo passes its queue),
never fetched from inside.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


class FeatureBank:
    """One ring buffer per partition (MoCo's queue, split by partition)."""

    def __init__(self, partitions: int, capacity: int, dim: int, device: str | torch.device = "cpu"):
        self.capacity = capacity
        self.features = torch.zeros(partitions, capacity, dim, device=device)
        # Which slice each row came from (-1: unknown), so a method can keep copies of the
        # query's own slice out of its negatives.
        self.slice_ids = torch.full((partitions, capacity), -1, dtype=torch.long, device=device)
        self.pointer = [0] * partitions
        self.count = [0] * partitions

    def push(self, features: torch.Tensor, partitions: torch.Tensor,
             slice_ids: torch.Tensor | None = None) -> None:
        """Enqueue rows, each into its partition's buffer, overwriting the oldest."""
        features = features.detach()
        if slice_ids is None:
            slice_ids = torch.full((len(features),), -1, dtype=torch.long)
        device = self.features.device
        for p in partitions.unique().tolist():
            keep = partitions == p
            rows = features[keep][-self.capacity:]
            ids = slice_ids.to(keep.device)[keep][-self.capacity:]
            idx = ((self.pointer[p] + torch.arange(len(rows))) % self.capacity).to(device)
            # rows may come from a bf16 autocast forward; the bank keeps its own dtype
            self.features[p, idx] = rows.to(device=device, dtype=self.features.dtype)
            self.slice_ids[p, idx] = ids.to(device)
            self.pointer[p] = (self.pointer[p] + len(rows)) % self.capacity
            self.count[p] = min(self.capacity, self.count[p] + len(rows))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All filled rows and their partition labels: (M, d), (M,)."""
        feats = [self.features[p, :n] for p, n in enumerate(self.count)]
        parts = [torch.full((n,), p, dtype=torch.long) for p, n in enumerate(self.count)]
        return torch.cat(feats), torch.cat(parts).to(self.features.device)

    def contents_slice_ids(self) -> torch.Tensor:
        """The slice id of every row of :meth:`contents`, in the same order: (M,)."""
        return torch.cat([self.slice_ids[p, :n] for p, n in enumerate(self.count)])

    def __len__(self) -> int:
        return sum(self.count)

    def state_dict(self) -> dict:
        """The rows and ring positions, as tensors and lists (for checkpoints)."""
        return {"features": self.features, "slice_ids": self.slice_ids,
                "pointer": list(self.pointer), "count": list(self.count)}

    def load_state_dict(self, state: dict) -> None:
        device = self.features.device   # copies: pushes write into them in place
        self.features = state["features"].to(device, copy=True)
        self.slice_ids = state["slice_ids"].to(device, copy=True)
        self.pointer, self.count = list(state["pointer"]), list(state["count"])


def sample_features(features: torch.Tensor, partitions: torch.Tensor, k: int,
                    generator: torch.Generator, *row_tags: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Draw min(k, M) rows uniformly without replacement (and the same rows of any
    ``row_tags``, e.g. where each row came from)."""
    if len(features) <= k:
        return (features, partitions, *row_tags)
    idx = torch.randperm(len(features), generator=generator)[:k].to(features.device)
    return (features[idx], partitions[idx], *(tag[idx] for tag in row_tags))


def partition_quotas(counts: list[int], k: int) -> list[int]:
    """How many of ``k`` rows to draw from each partition holding ``counts[p]`` rows: as even
    as possible, a partition short of its share giving the rest to the others (so the draw is
    min(k, sum(counts)) rows and every partition keeps positives for structural matching)."""
    quotas = [0] * len(counts)
    left = k
    order = sorted(range(len(counts)), key=lambda p: (counts[p], p))   # smallest first
    for i, p in enumerate(order):
        quotas[p] = min(counts[p], left // (len(order) - i))
        left -= quotas[p]
    return quotas


def sample_remote(chunks: list[tuple[np.ndarray, np.ndarray]], k: int,
                  rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """At most ``k`` rows of the clients' (features, partitions) ``chunks``, drawn uniformly
    without replacement within each partition (:func:`partition_quotas`), kept in client and
    row order. Only the partition labels (2 bytes a row) are read in full; only the drawn
    feature rows are copied, so the work is O(k) feature rows, not O(pool)."""
    labels = np.concatenate([p for _, p in chunks])
    if len(labels) <= k:
        return chunks
    present = np.unique(labels)
    rows = [np.flatnonzero(labels == q) for q in present]
    quotas = partition_quotas([len(r) for r in rows], k)
    picked = np.sort(np.concatenate([r if q == len(r) else rng.choice(r, q, replace=False)
                                     for r, q in zip(rows, quotas)]))
    starts = np.cumsum([0] + [len(p) for _, p in chunks])
    cuts = np.searchsorted(picked, starts)   # picked[cuts[i]:cuts[i + 1]]: chunk i's rows
    out = []
    for i, (features, partitions) in enumerate(chunks):
        mine = picked[cuts[i]:cuts[i + 1]] - starts[i]
        if len(mine):
            out.append((features[mine], partitions[mine]))
    return out


def merge_remote(shared: dict[int, tuple], exclude: int | None,
                 device: str | torch.device = "cpu", sample: int | None = None,
                 rng: np.random.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Concatenate the features other clients shared (ids sorted, so order is fixed); with
    ``sample`` (``pretrain.remote_sample``), at most that many of them, drawn per partition
    with ``rng`` (:func:`sample_remote`)."""
    chunks = [shared[c] for c in sorted(shared) if c != exclude and shared[c] is not None]
    if not chunks:
        return None
    if sample is not None:
        chunks = sample_remote(chunks, sample, rng)
    # torch.tensor copies: arrays from Ray's object store are read-only.
    feats = torch.cat([torch.tensor(f, dtype=torch.float32) for f, _ in chunks]).to(device)
    parts = torch.cat([torch.tensor(p, dtype=torch.long) for _, p in chunks]).to(device)
    return feats, parts


def concat_banks(pieces: Iterable[tuple[torch.Tensor, torch.Tensor] | None]):
    """Q = local bank U remote banks, skipping empty pieces (all empty: the first piece, a
    bank that starts empty under ``pretrain.bank_start: empty``)."""
    given = [p for p in pieces if p is not None]
    kept = [p for p in given if len(p[0])]
    if not kept:
        return given[0]
    return torch.cat([f for f, _ in kept]), torch.cat([p for _, p in kept])


def local_and_remote(local: tuple[torch.Tensor, torch.Tensor],
                     remote: tuple[torch.Tensor, torch.Tensor] | None):
    """Q = local bank U remote banks, with a (M,) bool tag: True for rows from other clients."""
    feats, parts = concat_banks([local, remote])
    is_remote = torch.zeros(len(feats), dtype=torch.bool, device=feats.device)
    is_remote[len(local[0]):] = True
    return feats, parts, is_remote
