"""Batched augmentations on (B, 1, H, W) tensors in [0, 1].

MONAI's random transforms work one sample at a time in the data loader; our slices already
sit in memory (on the GPU when there is one), so a whole batch is augmented with one
``affine_grid``/``grid_sample`` call instead, with a ``torch.Generator`` for reproducibility.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def random_affine(n: int, gen: torch.Generator, max_rotate_deg: float = 15.0,
                  scale: tuple[float, float] = (0.8, 1.1), max_shift: float = 0.08) -> torch.Tensor:
    """(n, 2, 3) affine matrices: rotation, isotropic zoom (crop-resize), translation."""
    angle = _uniform(n, -1, 1, gen) * math.radians(max_rotate_deg)
    s = _uniform(n, *scale, gen)
    tx, ty = _uniform(n, -max_shift, max_shift, gen), _uniform(n, -max_shift, max_shift, gen)
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def intensity_jitter(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.1,
                     contrast: tuple[float, float] = (0.75, 1.25),
                     gamma: tuple[float, float] = (0.7, 1.4), noise: float = 0.03) -> torch.Tensor:
    """Per-sample gamma, contrast, brightness and Gaussian noise (scanner-like changes)."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    g = _uniform(n, *gamma, gen).view(shape).to(x.device)
    c = _uniform(n, *contrast, gen).view(shape).to(x.device)
    b = _uniform(n, -brightness, brightness, gen).view(shape).to(x.device)
    eps = torch.randn(x.shape, generator=gen).to(x.device) * noise
    return x.clamp(min=0).pow(g) * c + b + eps


def contrastive_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random view for contrastive learning: crop-resize/rotate, then intensity."""
    return intensity_jitter(warp(x, random_affine(len(x), gen, scale=(0.7, 1.0))), gen)


def segmentation_augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """The same random geometry for images and label maps (nearest for labels)."""
    theta = random_affine(len(x), gen)
    xw = intensity_jitter(warp(x, theta), gen, noise=0.01)
    yw = warp(y[:, None].float(), theta, mode="nearest")[:, 0].long()
    return xw, yw
