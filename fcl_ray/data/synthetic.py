"""Synthetic multi-site cardiac cine-MRI phantom: short-axis stacks with ACDC-style labels.

Labels: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity.

Anatomy follows the slice position t in [0, 1] (0 = base, 1 = apex) the way real hearts do:
the LV shrinks and its cavity closes toward the apex, the RV crescent thins and vanishes
below about 70-80 % of the way down, great vessels appear only at the base and the liver
only near the apex. That position dependence is the signal the partition-based contrastive
methods learn from, so it must be there.

Patients differ in heart size, wall thickness, position, rotation, RV size and the slice
coverage; sites (one per client) differ like scanners do: intensity scale and gamma, a smooth
bias field, noise level, blur (resolution) and field of view. Everything is deterministic from
``(seed, site, case)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class SiteProfile:
    """How one scanner renders anatomy."""
    scale: float        # overall intensity gain
    gamma: float        # contrast non-linearity
    bias: np.ndarray    # 6 coefficients of a smooth quadratic log-bias field
    noise: float        # Rician noise sigma (relative to unit blood signal)
    blur: float         # Gaussian PSF sigma in pixels (in-plane resolution)
    zoom: float         # field of view: >1 shows the heart larger


@dataclass(frozen=True)
class Volume:
    """One short-axis stack, base (index 0) to apex."""
    case_id: str
    image: np.ndarray   # (D, H, W) float32
    label: np.ndarray   # (D, H, W) uint8


def site_profile(seed: int, site: int) -> SiteProfile:
    rng = np.random.default_rng([seed, site, 7919])
    return SiteProfile(
        scale=float(rng.uniform(0.6, 1.6)),
        gamma=float(rng.uniform(0.7, 1.4)),
        bias=rng.normal(0.0, 0.25, size=6),
        noise=float(rng.uniform(0.06, 0.16)),
        blur=float(rng.uniform(0.5, 1.5)),
        zoom=float(rng.uniform(0.85, 1.2)),
    )


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / max(rx, 1e-6)) ** 2 + ((y - cy) / max(ry, 1e-6)) ** 2 <= 1.0


def _smooth_field(rng, size: int, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.normal(size=(size, size)), sigma)
    return field / (field.std() + 1e-8)


def make_volume(seed: int, site: int, case: int, size: int = 64,
                slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0) -> Volume:
    """Render case ``case`` of site ``site``: a (D, size, size) image and its label map."""
    prof = site_profile(seed, site)
    rng = np.random.default_rng([seed, site, case])
    depth = int(rng.integers(slices[0], slices[1] + 1))
    # Patient anatomy (in units of half the field of view).
    lv_radius = rng.uniform(0.2, 0.34) * prof.zoom
    wall = rng.uniform(0.05, 0.10) * prof.zoom
    aspect = rng.uniform(0.8, 1.2)
    rv_size = rng.uniform(0.7, 1.3)
    rv_extent = rng.uniform(0.6, 0.85)            # where the RV vanishes, fraction of the way down
    angle = rng.uniform(-0.8, 0.8)                # rotation of the heart's axes (radians)
    cx, cy = rng.uniform(-0.22, 0.22, size=2)
    body_rx, body_ry = rng.uniform(0.85, 0.98), rng.uniform(0.65, 0.85)
    t_positions = np.linspace(rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0), depth)
    texture = _smooth_field(rng, size, 2.0)
    # Patient contrast: blood, muscle and surrounding tissue vary, and muscle can be nearly as
    # bright as its surroundings (as the chest wall is), which makes the epicardium hard.
    blood = rng.uniform(0.7, 1.0)
    muscle = rng.uniform(0.2, 0.4)
    tissue = rng.uniform(muscle + 0.03, 0.55)
    fat_ring = rng.uniform(0.0, 0.04)             # bright epicardial fat, absent when small
    # Bright distractors that look like blood pools (vessels, stomach, fat pads): fixed per
    # patient, drifting slowly from base to apex.
    distractors = [(rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.6), rng.uniform(0.04, 0.12),
                    rng.uniform(0.5, 1.0), rng.uniform(-0.2, 0.2), rng.uniform(0, 1))
                   for _ in range(int(rng.integers(2, 6)))]
    n_papillary = 2

    # Pixel grid in [-1, 1], rotated into the heart's frame.
    lin = np.linspace(-1, 1, size)
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    c, s = np.cos(angle), np.sin(angle)
    hx = c * (gx - cx) + s * (gy - cy)
    hy = -s * (gx - cx) + c * (gy - cy)
    bias = np.exp(prof.bias[0] * gx + prof.bias[1] * gy + prof.bias[2] * gx * gy
                  + prof.bias[3] * gx ** 2 + prof.bias[4] * gy ** 2)

    images = np.zeros((depth, size, size), np.float32)
    labels = np.zeros((depth, size, size), np.uint8)
    for i, t in enumerate(t_positions):
        # Left ventricle: outer wall shrinks toward the apex, cavity closes.
        outer = lv_radius * (1.0 - 0.55 * t ** 1.6)
        w = wall * (1.0 + 0.35 * t)
        cavity = max(outer - w, 0.0) * (1.0 - 0.6 * t ** 4)
        lv_out = _ellipse(hx, hy, 0, 0, outer * aspect, outer)
        lv_cav = _ellipse(hx, hy, 0, 0, cavity * aspect, cavity)
        # Right ventricle: a crescent hugging the septum, gone below rv_extent.
        rv_scale = rv_size * max(0.0, 1.0 - (t / rv_extent) ** 2) if t < rv_extent else 0.0
        rv = np.zeros_like(lv_out)
        if rv_scale > 0.05:
            rv_rx = outer * 0.75 * rv_scale
            rv_ry = outer * 1.45 * rv_scale ** 0.5
            rv_c = -(outer + rv_rx * 0.45)
            septum = _ellipse(hx, hy, 0, 0, outer * aspect + 0.03, outer + 0.03)
            rv = _ellipse(hx, hy, rv_c, outer * 0.15, rv_rx, rv_ry) & ~septum
        myo = lv_out & ~lv_cav

        label = np.zeros((size, size), np.uint8)
        label[rv] = 1
        label[myo] = 2
        label[lv_cav] = 3

        # Tissue intensities of a bSSFP cine: bright blood, dark muscle, grey surroundings.
        img = np.zeros((size, size), np.float32)
        body = _ellipse(gx, gy, 0, 0.05, body_rx, body_ry)
        img[body] = tissue + 0.1 * texture[body]
        for side in (-1, 1):  # lungs: dark, lateral to the heart
            img[_ellipse(gx, gy, side * 0.75, -0.1, 0.25, 0.45) & body] = 0.08
        if t > 0.6:           # liver appears under the apex
            liver = _ellipse(gx, gy, 0.35, 0.55 - 0.3 * (t - 0.6), 0.45, 0.3 * (t - 0.5)) & body
            img[liver] = 0.6 + 0.05 * texture[liver]
        for dx, dy, r, level, drift, phase in distractors:
            r_t = r * (0.6 + 0.8 * abs(np.sin(np.pi * (t + phase))))
            img[_ellipse(gx, gy, dx + drift * t, dy, r_t, r_t * 0.8) & body] = blood * level
        if t < 0.25:          # aorta and pulmonary trunk near the base: bright, unlabeled
            img[_ellipse(hx, hy, outer * 1.4, -outer * 1.2, 0.07, 0.07)] = blood * 0.95
            img[_ellipse(hx, hy, -outer * 0.5, -outer * 1.5, 0.06, 0.06)] = blood * 0.9
        if fat_ring > 0.015:
            ring = _ellipse(hx, hy, 0, 0, outer * aspect + fat_ring, outer + fat_ring) & ~lv_out
            img[ring & ~rv] = 0.75
        img[rv] = blood * 0.95 + 0.05 * texture[rv]
        img[myo] = muscle + 0.05 * texture[myo]
        img[lv_cav] = blood + 0.05 * texture[lv_cav]
        for k in range(n_papillary):  # papillary muscles: dark dots inside the LV (labelled LV)
            if cavity > 0.05:
                a = angle + 0.8 + k * 1.4
                px, py = 0.55 * cavity * np.cos(a), 0.55 * cavity * np.sin(a)
                img[_ellipse(hx, hy, px, py, 0.15 * cavity, 0.15 * cavity) & lv_cav] = muscle

        # Scanner: blur (PSF), bias field, gamma, gain, Rician noise.
        img = gaussian_filter(img, prof.blur) * bias
        img = np.clip(img, 0, None) ** prof.gamma * prof.scale
        sigma = prof.noise * noise_scale * prof.scale
        real = img + rng.normal(0, sigma, img.shape)
        imag = rng.normal(0, sigma, img.shape)
        images[i] = np.sqrt(real ** 2 + imag ** 2).astype(np.float32)
        labels[i] = label
    return Volume(case_id=f"site{site:02d}_case{case:03d}", image=images, label=labels)


def make_site(seed: int, site: int, cases: int, size: int = 64,
              slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0) -> list[Volume]:
    """All volumes of one site (client), deterministic from the seed."""
    return [make_volume(seed, site, c, size, slices, noise_scale) for c in range(cases)]
