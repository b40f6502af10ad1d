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
                  scale: tuple[float, float] = (0.8, 1.1), max_shift: float = 0.08,
                  shift_within_crop: bool = False) -> torch.Tensor:
    """(n, 2, 3) affine matrices (output -> input coordinates, ``affine_grid``'s convention):
    rotation, isotropic zoom ``s`` (s > 1 enlarges a crop of 1/s of the field of view; s < 1
    shrinks the image inside a zero border) and translation. ``shift_within_crop`` moves the
    crop anywhere it stays inside the image (|shift| <= 1 - 1/s) instead of ``max_shift``."""
    angle = _uniform(n, -1, 1, gen) * math.radians(max_rotate_deg)
    s = _uniform(n, *scale, gen)
    reach = (1.0 - 1.0 / s).clamp(min=0.0) if shift_within_crop else torch.full((n,), max_shift)
    tx, ty = _uniform(n, -1, 1, gen) * reach, _uniform(n, -1, 1, gen) * reach
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def random_flips(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip each sample left-right and/or up-down with probability 1/2 each."""
    n = x.shape[0]
    lr = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    ud = (torch.rand(n, generator=gen) < 0.5).to(x.device).view(n, 1, 1, 1)
    x = torch.where(lr, x.flip(-1), x)
    return torch.where(ud, x.flip(-2), x)


def intensity_jitter(x: torch.Tensor, gen: torch.Generator, brightness: float = 0.1,
                     contrast: tuple[float, float] = (0.75, 1.25),
                     gamma: tuple[float, float] = (0.7, 1.4), noise: float = 0.03) -> torch.Tensor:
    """Per-sample gamma, contrast, brightness and Gaussian noise (scanner-like changes).

    Gamma acts on each sample's own [min, max] range mapped to [0, 1] and back, so it works
    the same for [0, 1] (percentile) and z-score inputs (no clamp at 0, which would wipe out
    the negative half of a z-scored image)."""
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    g = _uniform(n, *gamma, gen).view(shape).to(x.device)
    c = _uniform(n, *contrast, gen).view(shape).to(x.device)
    b = _uniform(n, -brightness, brightness, gen).view(shape).to(x.device)
    eps = torch.randn(x.shape, generator=gen).to(x.device) * noise
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    x = lo + span * ((x - lo) / span).clamp(0, 1).pow(g)
    return x * c + b + eps


# Views for contrastive pre-training (``pretrain.views``): zoom range of the crop-resize.
VIEW_STYLES = {
    # Crop part of the slice (1/1.6 to all of the field of view) and enlarge it, anywhere it
    # fits; random flips. Chaitanya et al. crop 100 of 192 px and resize back.
    "zoom": {"scale": (1.0, 1.6), "flips": True},
    "zoom_mild": {"scale": (1.0, 1.25), "flips": True},
    # The old view: shrink the whole slice (up to half the area) inside an empty border.
    "shrink": {"scale": (0.7, 1.0), "flips": False},
}


def contrastive_view(x: torch.Tensor, gen: torch.Generator, style: str = "zoom",
                     flips: bool = True) -> torch.Tensor:
    """One random view for contrastive learning: crop-resize/rotate (+ flips, when the style
    has them and ``flips``), then intensity. Rotation prediction passes ``flips=False``: an
    up-down flip looks like a half turn."""
    if style not in VIEW_STYLES:
        raise ValueError(f"unknown view style '{style}' (use {', '.join(VIEW_STYLES)})")
    spec = VIEW_STYLES[style]
    zoom_in = spec["scale"][0] >= 1.0
    x = warp(x, random_affine(len(x), gen, scale=spec["scale"], shift_within_crop=zoom_in))
    if spec["flips"] and flips:
        x = random_flips(x, gen)
    return intensity_jitter(x, gen)


# Fine-tuning augmentation (``finetune.augment``): the geometry drawn for image and labels.
SEGMENTATION_AUGMENTS = {
    # Rotation +-15 degrees, zoom 0.8-1.1, shift 8 %; light intensity jitter.
    "standard": {"max_rotate_deg": 15.0, "scale": (0.8, 1.1), "flips": False},
    # As the references fine-tune (Zeng et al.: mirroring, any rotation, zoom 0.7-1.3; their
    # elastic deformation is left out).
    "strong": {"max_rotate_deg": 180.0, "scale": (0.7, 1.3), "flips": True},
    # The labeled slices as they are: how much of a result the augmentation makes.
    "none": None,
}


def _flip_matrices(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 2, 2) diagonal matrices of +-1: left-right and up-down flips with probability 1/2
    each, applied through the affine so that labels flip with their image."""
    signs = torch.where(torch.rand(n, 2, generator=gen) < 0.5, -1.0, 1.0)
    return torch.diag_embed(signs)


def segmentation_augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                         style: str = "standard"):
    """The same random geometry for images and label maps (nearest for labels), then
    intensity jitter on the images; ``style`` is a name of ``SEGMENTATION_AUGMENTS``."""
    if style not in SEGMENTATION_AUGMENTS:
        raise ValueError(f"unknown fine-tuning augmentation '{style}' "
                         f"(use {', '.join(SEGMENTATION_AUGMENTS)})")
    spec = SEGMENTATION_AUGMENTS[style]
    if spec is None:
        return x, y
    theta = random_affine(len(x), gen, max_rotate_deg=spec["max_rotate_deg"], scale=spec["scale"])
    if spec["flips"]:
        theta = torch.cat([_flip_matrices(len(x), gen) @ theta[:, :, :2], theta[:, :, 2:]], 2)
    xw = intensity_jitter(warp(x, theta), gen, noise=0.01)
    yw = warp(y[:, None].float(), theta, mode="nearest")[:, 0].long()
    return xw, yw
