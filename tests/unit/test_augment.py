"""Augmentations on known images: the contrastive crop enlarges, z-score inputs survive."""
import torch

from fcl_ray.methods.augment import contrastive_view, intensity_jitter, random_affine, warp


def _disk(size: int = 64, radius: float = 10.0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = (size - 1) / 2
    return (((yy - centre) ** 2 + (xx - centre) ** 2) <= radius ** 2).float()[None, None]


def test_zoom_in_enlarges_the_object_and_shrink_makes_it_smaller():
    disk = _disk()
    gen = torch.Generator().manual_seed(0)
    # Fixed zoom 1.5, no rotation, centred: the disk's area grows by 1.5^2.
    theta = random_affine(1, gen, max_rotate_deg=0.0, scale=(1.5, 1.5), max_shift=0.0)
    area = (warp(disk, theta) > 0.5).sum().item()
    assert abs(area / disk.sum().item() - 2.25) < 0.15
    theta = random_affine(1, gen, max_rotate_deg=0.0, scale=(0.7, 0.7), max_shift=0.0)
    assert (warp(disk, theta) > 0.5).sum().item() < 0.6 * disk.sum().item()


def test_zoom_views_never_shrink_and_keep_the_crop_inside_the_image():
    disk = _disk().repeat(64, 1, 1, 1)
    gen = torch.Generator().manual_seed(1)
    views = contrastive_view(disk, gen, "zoom")
    # No zero border: the crop lies inside the field of view, so the corners stay near the
    # (jittered) background and the disk is never smaller than it was (minus blur/noise).
    assert ((views > 0.5).flatten(1).sum(1) >= 0.9 * disk[0].sum()).float().mean() > 0.95
    shrunk = contrastive_view(disk, torch.Generator().manual_seed(1), "shrink")
    assert (shrunk > 0.5).flatten(1).sum(1).float().mean() < (views > 0.5).flatten(1).sum(1).float().mean()


def test_intensity_jitter_keeps_the_negative_half_of_zscore_images():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(8, 1, 16, 16, generator=gen)          # z-scored slices: mean 0, std 1
    out = intensity_jitter(x, gen, noise=0.0)
    assert (out < -0.5).float().mean() > 0.15               # a clamp at 0 would leave ~0
    # Order of intensities within a sample is kept (monotone gamma, positive contrast).
    a, b = x[0].flatten(), out[0].flatten()
    assert torch.equal(torch.argsort(a), torch.argsort(b))
