"""The Gaussian mechanism on the rows a site shares, applied at the site. Torch, no Ray.

With ``privacy.*`` set, a site's round release (:meth:`MomentumBankMethod._bank_sample_to_share`)
is built here instead of sampled from its feature bank, because bank rows cannot be bounded per
slice: one slice can sit in the bank several times (the ring buffer takes every batch's keys),
and the projection head's BatchNorm in training mode makes each row depend on the other slices
of its batch. Instead, each round:

1. :func:`choose_units`: draw ``sampled`` privacy units uniformly without replacement from the
   site's pre-training pool (slice unit: slices; patient unit: patients, then
   ``rows_per_patient`` of each one's slices). Only indices are drawn; no pixel is looked at.
2. :func:`embed_rows`: one L2-normalised row per chosen slice, computed alone (momentum network
   in eval mode, no augmentation), so a row depends on its own slice only.
3. :func:`add_noise`: Gaussian noise of std ``noise_multiplier x sensitivity`` on every
   coordinate, then re-normalised (post-processing, free under DP).

The partition labels travel in the clear: they are a slice's position band in its stack, which
the adjacency (replace a unit's pixels, keep its stack) treats as public.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fcl_ray.privacy.accountant import RoundRelease, sensitivity


def units_of(unit: str, n_slices: int, patients: Optional[torch.Tensor]) -> list[torch.Tensor]:
    """The slice indices of each privacy unit: one per slice, or one group per patient
    (``patients`` None: every slice is its own patient)."""
    if unit == "slice" or patients is None:
        return [torch.tensor([i]) for i in range(n_slices)]
    patients = patients.cpu()
    return [torch.nonzero(patients == p).flatten() for p in patients.unique().tolist()]


def planned_release(unit: str, n_slices: int, patients: Optional[torch.Tensor],
                    exchange_size: int, rows_per_patient: int,
                    noise_multiplier: float) -> RoundRelease:
    """The release a round makes: how many units there are and how many are drawn (slice:
    up to ``exchange_size``; patient: up to ``exchange_size // rows_per_patient``)."""
    population = len(units_of(unit, n_slices, patients))
    per_unit = 1 if unit == "slice" else rows_per_patient
    return RoundRelease(population, min(population, max(1, exchange_size // per_unit)),
                        noise_multiplier)


def choose_units(units: list[torch.Tensor], sampled: int, rows_per_unit: int,
                 generator: torch.Generator) -> torch.Tensor:
    """Slice indices of ``sampled`` units drawn uniformly without replacement, at most
    ``rows_per_unit`` slices of each (drawn without replacement within the unit)."""
    picked = torch.randperm(len(units), generator=generator)[:sampled]
    rows = []
    for u in picked.tolist():
        members = units[u]
        order = torch.randperm(len(members), generator=generator)[:rows_per_unit]
        rows.append(members[order])
    return torch.cat(rows)


@torch.no_grad()
def embed_rows(net: nn.Module, images: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``net``'s L2-normalised rows of ``images``, in eval mode (BatchNorm on its running
    statistics, so a row depends on its own slice only); the caller's mode is restored."""
    was_training = net.training
    net.eval()
    try:
        return torch.cat([net(images[i:i + chunk]) for i in range(0, len(images), chunk)])
    finally:
        net.train(was_training)


def noise_std(noise_multiplier: float, unit: str, rows_per_patient: int = 1) -> float:
    """Standard deviation of the noise on each coordinate: multiplier x L2 sensitivity."""
    return noise_multiplier * sensitivity(unit, rows_per_patient)


def add_noise(rows: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Rows + N(0, std^2) on every coordinate, re-normalised to unit length."""
    if std == 0:
        return rows
    noise = torch.randn(rows.shape, generator=generator).to(rows.device)
    return nn.functional.normalize(rows + std * noise, dim=1)
