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

Cine: each patient has ``frames`` frames of one cardiac cycle (:func:`contraction`): frame 0
is end-diastole (ED), frame :func:`es_frame` (about a third of the cycle) end-systole (ES).
Towards ES the LV and RV cavities shrink, the myocardium keeps its area and so thickens, the
base descends a little and the heart shifts by under a pixel; body, lungs, liver and
distractors stay put. Each frame has its own scanner noise. Frame 0 is exactly the volume
:func:`make_volume` has always rendered. Like ACDC, only ED and ES carry masks
(:func:`make_cine_site`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
def gaussian_filter_numpy(image: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter's default (mode 'reflect', truncate 4), separably over
    every axis in plain numpy; equal to SciPy's up to float rounding. Used where SciPy is
    missing (e.g. a GPU node with only torch/numpy)."""
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(image, dtype=np.float64)
    for axis in range(out.ndim):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")     # SciPy's 'reflect'
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), axis, padded)
    return out.astype(np.asarray(image).dtype)


try:
    from scipy.ndimage import gaussian_filter
except ImportError:
    gaussian_filter = gaussian_filter_numpy

CINE_FRAMES = 12    # frames per cycle when data.cine_frames is not set


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
    """One short-axis stack, base (index 0) to apex; ``label`` None for an unlabeled frame.

    ``volume_id`` is ``<case>:<frame>`` (``patient001:ED``): a case is a patient, and one
    patient has several volumes (frames); :func:`fcl_ray.data.patient_of` strips the frame."""
    volume_id: str
    image: np.ndarray               # (D, H, W) float32
    label: Optional[np.ndarray]     # (D, H, W) uint8


@dataclass(frozen=True)
class _Patient:
    """One patient's anatomy and contrast (drawn by :func:`_draw_patient`)."""
    depth: int
    lv_radius: float
    wall: float
    aspect: float
    rv_size: float
    rv_extent: float
    angle: float
    cx: float
    cy: float
    body_rx: float
    body_ry: float
    t_positions: np.ndarray
    texture: np.ndarray
    blood: float
    muscle: float
    tissue: float
    fat_ring: float
    distractors: list


@dataclass(frozen=True)
class _Motion:
    """How one patient's heart moves from ED to ES (its own random stream, so drawing it
    leaves the ED frame untouched)."""
    lv_shrink: float    # LV cavity radius lost at ES (fraction): area ejection ~45-60 %
    rv_shrink: float    # RV size lost at ES (fraction)
    descent: float      # base-to-apex shortening seen by the fixed slices (fraction of t)
    shift: np.ndarray   # in-plane drift of the heart at ES (half-FOV units, < 1 px)


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


def es_frame(frames: int) -> int:
    """Index of the end-systolic frame: about a third of the cycle (systole is short)."""
    return max(1, round(frames / 3))


def contraction(frame: int, frames: int) -> float:
    """How far frame ``frame`` of ``frames`` is from ED towards ES: 0 at ED, 1 at ES.

    A half cosine up through systole and down through diastole, so it is smooth and periodic
    (the last frame leads back into the next ED).
    """
    es = es_frame(frames)
    if frame == 0:
        return 0.0
    if frame <= es:
        return float(0.5 - 0.5 * np.cos(np.pi * frame / es))
    return float(0.5 + 0.5 * np.cos(np.pi * (frame - es) / (frames - es)))


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / max(rx, 1e-6)) ** 2 + ((y - cy) / max(ry, 1e-6)) ** 2 <= 1.0


def _smooth_field(rng, size: int, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.normal(size=(size, size)), sigma)
    return field / (field.std() + 1e-8)


def _draw_patient(rng: np.random.Generator, prof: SiteProfile, size: int,
                  slices: tuple[int, int]) -> _Patient:
    """The patient's anatomy; the draw order is fixed (the ED frame's noise follows it)."""
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
    return _Patient(depth, lv_radius, wall, aspect, rv_size, rv_extent, angle, cx, cy,
                    body_rx, body_ry, t_positions, texture, blood, muscle, tissue, fat_ring,
                    distractors)


def _draw_motion(seed: int, site: int, case: int) -> _Motion:
    rng = np.random.default_rng([seed, site, case, 6151])
    return _Motion(lv_shrink=float(rng.uniform(0.25, 0.35)),
                   rv_shrink=float(rng.uniform(0.2, 0.35)),
                   descent=float(rng.uniform(0.02, 0.06)),
                   shift=rng.uniform(-0.02, 0.02, size=2))


def _render(p: _Patient, prof: SiteProfile, size: int, noise_scale: float,
            rng: np.random.Generator, motion: Optional[_Motion] = None,
            c: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Image and label stack of patient ``p`` at contraction ``c`` (0 = ED, 1 = ES), with
    scanner noise from ``rng``. At ``c == 0`` no motion is applied at all, so ED is exact."""
    n_papillary = 2
    moving = motion is not None and c > 0
    cx, cy = (p.cx + motion.shift[0] * c, p.cy + motion.shift[1] * c) if moving else (p.cx, p.cy)
    angle = p.angle
    # Pixel grid in [-1, 1], rotated into the heart's frame.
    lin = np.linspace(-1, 1, size)
    gy, gx = np.meshgrid(lin, lin, indexing="ij")
    c_, s_ = np.cos(angle), np.sin(angle)
    hx = c_ * (gx - cx) + s_ * (gy - cy)
    hy = -s_ * (gx - cx) + c_ * (gy - cy)
    bias = np.exp(prof.bias[0] * gx + prof.bias[1] * gy + prof.bias[2] * gx * gy
                  + prof.bias[3] * gx ** 2 + prof.bias[4] * gy ** 2)
    texture, blood, muscle = p.texture, p.blood, p.muscle

    images = np.zeros((p.depth, size, size), np.float32)
    labels = np.zeros((p.depth, size, size), np.uint8)
    for i, t in enumerate(p.t_positions):
        # The slices stay where they are while the base descends: a slice sees anatomy that
        # was nearer the base at ED (heart only; the body, liver and distractors keep ``t``).
        th = max(t - motion.descent * c, 0.0) if moving else t
        # Left ventricle: outer wall shrinks toward the apex, cavity closes.
        outer = p.lv_radius * (1.0 - 0.55 * th ** 1.6)
        w = p.wall * (1.0 + 0.35 * th)
        cavity = max(outer - w, 0.0) * (1.0 - 0.6 * th ** 4)
        if moving:
            # Systole: the cavity shrinks; the myocardium keeps its area, so the wall thickens.
            shrunk = cavity * (1.0 - motion.lv_shrink * c)
            outer = float(np.sqrt(outer ** 2 - cavity ** 2 + shrunk ** 2))
            cavity = shrunk
        lv_out = _ellipse(hx, hy, 0, 0, outer * p.aspect, outer)
        lv_cav = _ellipse(hx, hy, 0, 0, cavity * p.aspect, cavity)
        # Right ventricle: a crescent hugging the septum, gone below rv_extent.
        rv_scale = p.rv_size * max(0.0, 1.0 - (th / p.rv_extent) ** 2) if th < p.rv_extent else 0.0
        if moving:
            rv_scale *= 1.0 - motion.rv_shrink * c
        rv = np.zeros_like(lv_out)
        if rv_scale > 0.05:
            rv_rx = outer * 0.75 * rv_scale
            rv_ry = outer * 1.45 * rv_scale ** 0.5
            rv_c = -(outer + rv_rx * 0.45)
            septum = _ellipse(hx, hy, 0, 0, outer * p.aspect + 0.03, outer + 0.03)
            rv = _ellipse(hx, hy, rv_c, outer * 0.15, rv_rx, rv_ry) & ~septum
        myo = lv_out & ~lv_cav

        label = np.zeros((size, size), np.uint8)
        label[rv] = 1
        label[myo] = 2
        label[lv_cav] = 3

        # Tissue intensities of a bSSFP cine: bright blood, dark muscle, grey surroundings.
        img = np.zeros((size, size), np.float32)
        body = _ellipse(gx, gy, 0, 0.05, p.body_rx, p.body_ry)
        img[body] = p.tissue + 0.1 * texture[body]
        for side in (-1, 1):  # lungs: dark, lateral to the heart
            img[_ellipse(gx, gy, side * 0.75, -0.1, 0.25, 0.45) & body] = 0.08
        if t > 0.6:           # liver appears under the apex
            liver = _ellipse(gx, gy, 0.35, 0.55 - 0.3 * (t - 0.6), 0.45, 0.3 * (t - 0.5)) & body
            img[liver] = 0.6 + 0.05 * texture[liver]
        for dx, dy, r, level, drift, phase in p.distractors:
            r_t = r * (0.6 + 0.8 * abs(np.sin(np.pi * (t + phase))))
            img[_ellipse(gx, gy, dx + drift * t, dy, r_t, r_t * 0.8) & body] = blood * level
        if th < 0.25:         # aorta and pulmonary trunk near the base: bright, unlabeled
            img[_ellipse(hx, hy, outer * 1.4, -outer * 1.2, 0.07, 0.07)] = blood * 0.95
            img[_ellipse(hx, hy, -outer * 0.5, -outer * 1.5, 0.06, 0.06)] = blood * 0.9
        if p.fat_ring > 0.015:
            ring = (_ellipse(hx, hy, 0, 0, outer * p.aspect + p.fat_ring, outer + p.fat_ring)
                    & ~lv_out)
            img[ring & ~rv] = 0.75
        img[rv] = blood * 0.95 + 0.05 * texture[rv]
        img[myo] = muscle + 0.05 * texture[myo]
        img[lv_cav] = blood + 0.05 * texture[lv_cav]
        for k in range(n_papillary):  # papillary muscles: dark dots inside the LV (labelled LV)
            if cavity > 0.05:
                a = angle + 0.8 + k * 1.4
                px, py = 0.55 * cavity * np.cos(a), 0.55 * cavity * np.sin(a)
                img[_ellipse(hx, hy, px, py, 0.15 * cavity, 0.15 * cavity) & lv_cav] = muscle

        images[i] = acquire(img, prof, bias, noise_scale, rng)
        labels[i] = label
    return images, labels


def acquire(img: np.ndarray, prof: SiteProfile, bias: np.ndarray, noise_scale: float,
            rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """What the scanner makes of a slice's tissue intensities: blur (PSF), bias field, a
    receive gain, gamma and scale, then Rician noise drawn from ``rng``."""
    img = gaussian_filter(img, prof.blur) * bias
    img = np.clip(img * gain, 0, None) ** prof.gamma * prof.scale
    sigma = prof.noise * noise_scale * prof.scale
    real = img + rng.normal(0, sigma, img.shape)
    imag = rng.normal(0, sigma, img.shape)
    return np.sqrt(real ** 2 + imag ** 2).astype(np.float32)


def case_name(site: int, case: int) -> str:
    return f"site{site:02d}_case{case:03d}"


def make_frames(seed: int, site: int, case: int, frames: Sequence[int],
                cycle: int = CINE_FRAMES, size: int = 64, slices: tuple[int, int] = (8, 12),
                noise_scale: float = 1.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) stacks of the given frames of one patient's ``cycle``-frame cine.

    Every frame has the same slice count. Frame 0's noise continues the patient's own random
    stream (as :func:`make_volume` always did); other frames draw theirs from a stream of
    their own, so any subset of frames renders the same pixels.
    """
    prof = site_profile(seed, site)
    rng = np.random.default_rng([seed, site, case])
    patient = _draw_patient(rng, prof, size, slices)
    motion = _draw_motion(seed, site, case)
    out = []
    for f in frames:
        if not 0 <= f < cycle:
            raise ValueError(f"frame {f} not in [0, {cycle})")
        noise = rng if f == 0 else np.random.default_rng([seed, site, case, 4099, f])
        out.append(_render(patient, prof, size, noise_scale, noise, motion,
                           contraction(f, cycle)))
    return out


def make_volume(seed: int, site: int, case: int, size: int = 64,
                slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0) -> Volume:
    """Render case ``case`` of site ``site`` at ED: a (D, size, size) image and its labels."""
    ((image, label),) = make_frames(seed, site, case, [0], CINE_FRAMES, size, slices,
                                    noise_scale)
    return Volume(volume_id=case_name(site, case), image=image, label=label)


def make_site(seed: int, site: int, cases: int, size: int = 64,
              slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0) -> list[Volume]:
    """All ED volumes of one site (client), deterministic from the seed."""
    return [make_volume(seed, site, c, size, slices, noise_scale) for c in range(cases)]


def cine_plan(cycle: int, phases: Sequence[str], extra_frames: int) -> list[tuple[str, int, bool]]:
    """(frame name, frame index, has mask) per volume of one patient: the labeled phases
    (``ED``, ``ES``) first, then ``extra_frames`` unlabeled frames (``t05``: 0-based index)
    spread evenly over the cycle, never ED or ES (as the ACDC and M&Ms readers pick them)."""
    from fcl_ray.data.readers.common import pick_extra_frames  # late: avoids an import cycle

    index = {"ED": 0, "ES": es_frame(cycle)}
    plan = [(phase, index[phase], True) for phase in phases]
    plan += [(f"t{t:02d}", t, False)
             for t in pick_extra_frames(cycle, list(index.values()), extra_frames)]
    return plan


def make_cine_site(seed: int, site: int, cases: int, size: int = 64,
                   slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0,
                   cycle: int = CINE_FRAMES, phases: Sequence[str] = ("ED",),
                   extra_frames: int = 0, first_case: int = 0) -> list[Volume]:
    """One site's volumes the way the real-data readers give them: ids ``<case>:<frame>``
    (``site00_case003:ED``, ``site00_case003:t05``), every patient's labeled phases first
    (in case order), then the unlabeled extra frames (``label`` None). Cases ``first_case``
    to ``first_case + cases - 1``: a case's pixels depend on its own index only."""
    plan = cine_plan(cycle, phases, extra_frames)
    labeled, unlabeled = [], []
    for case in range(first_case, first_case + cases):
        rendered = make_frames(seed, site, case, [f for _, f, _ in plan], cycle, size, slices,
                               noise_scale)
        for (name, _, has_mask), (image, label) in zip(plan, rendered):
            vol = Volume(f"{case_name(site, case)}:{name}", image, label if has_mask else None)
            (labeled if has_mask else unlabeled).append(vol)
    return labeled + unlabeled
