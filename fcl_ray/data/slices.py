"""Volumes -> normalised 2D slices with a partition index: what every client trains on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch


def partition_index(slice_index: int, depth: int, partitions: int) -> int:
    """Partition of slice ``slice_index`` in a stack of ``depth`` slices (0 = base).

    We use ``floor(i * S / D)``. The rule ``min(i // ceil(D / S), S - 1)`` quoted in the method
    notes leaves the last partition empty for some depths (D=9, S=4 gives 3-3-3-0), which would
    silently drop apex slices from the positives; ours gives every partition floor(D/S) or
    ceil(D/S) contiguous slices whenever D >= S.
    """
    if not 0 <= slice_index < depth:
        raise ValueError(f"slice {slice_index} outside a stack of {depth}")
    return min(slice_index * partitions // depth, partitions - 1)


def normalise_volume(image: np.ndarray, mode: str = "percentile") -> np.ndarray:
    """Per-volume intensity normalisation: 1st/99th percentile min-max to [0, 1], or z-score."""
    image = image.astype(np.float32)
    if mode == "zscore":
        return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / (hi - lo + 1e-6), 0.0, 1.0).astype(np.float32)


@dataclass
class SliceSet:
    """All slices of some volumes, as tensors ready for training (kept in memory)."""
    images: torch.Tensor      # (N, 1, H, W) float32
    labels: torch.Tensor      # (N, H, W) int64 (all zeros where unlabeled)
    partition: torch.Tensor   # (N,) int64
    volume: torch.Tensor      # (N,) int64: index of the volume in the list given
    position: torch.Tensor    # (N,) float32: relative position base (0) to apex (1)
    # (N,) int64: the patient whose frame (volume) the slice is from; None: one per volume
    patient: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.images)

    def _tensors(self) -> list[Optional[torch.Tensor]]:
        return [self.images, self.labels, self.partition, self.volume, self.position, self.patient]

    def select_volumes(self, volume_ids: Sequence[int]) -> "SliceSet":
        """The slices of the given volumes only (order of the slices kept)."""
        keep = torch.isin(self.volume, torch.as_tensor(list(volume_ids), dtype=torch.long,
                                                       device=self.volume.device))
        return SliceSet(*(None if t is None else t[keep] for t in self._tensors()))

    def to(self, device: torch.device | str) -> "SliceSet":
        return SliceSet(*(None if t is None else t.to(device) for t in self._tensors()))


def volumes_to_slices(images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None],
                      partitions: int, normalise: str = "percentile",
                      patients: Optional[Sequence[str]] = None) -> SliceSet:
    """Stack every (D, H, W) volume into slices tagged with partition and position, and with
    the patient of each volume when ``patients`` (one name per volume) is given."""
    xs, ys, parts, vols, pos = [], [], [], [], []
    for v, (image, label) in enumerate(zip(images, labels)):
        depth = image.shape[0]
        xs.append(normalise_volume(image, normalise))
        ys.append(np.zeros(image.shape, np.int64) if label is None else label.astype(np.int64))
        parts += [partition_index(i, depth, partitions) for i in range(depth)]
        vols += [v] * depth
        pos += list(np.linspace(0.0, 1.0, depth)) if depth > 1 else [0.0]
    return SliceSet(
        images=torch.from_numpy(np.concatenate(xs))[:, None].contiguous(),
        labels=torch.from_numpy(np.concatenate(ys)),
        partition=torch.tensor(parts, dtype=torch.long),
        volume=torch.tensor(vols, dtype=torch.long),
        position=torch.tensor(pos, dtype=torch.float32),
        patient=None if patients is None else _patient_index(patients, vols),
    )


def _patient_index(patients: Sequence[str], volume_of_slice: list[int]) -> torch.Tensor:
    """Per slice, the number of its volume's patient (patients numbered as first met)."""
    number: dict[str, int] = {}
    per_volume = [number.setdefault(name, len(number)) for name in patients]
    return torch.tensor([per_volume[v] for v in volume_of_slice], dtype=torch.long)
