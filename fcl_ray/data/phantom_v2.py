"""Phantom v2: a cardiac cine phantom whose sites differ in anatomy and whose slice position
can only be read from anatomy, not from global brightness.

Labels as in v1 (ACDC): 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity.

What v1 lacked (issue 28) and v2 adds:

- **The whole slice changes from base to apex.** At the base: left and right atria behind
  the ventricles, the aortic root and pulmonary trunk, an LV outflow tract that opens the
  myocardial ring, large lungs. Mid-ventricle: papillary muscles. Towards the apex: the
  cavity closes into a myocardial cap, the RV ends, the lungs shrink and the liver dome and
  stomach rise from below (at a height each patient has).
- **Bright things that need context to reject.** The descending aorta and spinal canal (bright
  round blobs in every slice), a stomach full of fluid, epicardial and subcutaneous fat, arms.
- **No global shortcut.** Per-patient body habitus (size, subcutaneous fat, arms, stomach
  contents, liver brightness) moves a slice's global intensity statistics more than its
  position does, so "how much bright blob" no longer tells base from apex across patients
  (``experiments/phantom_checks.py`` measures it).
- **Sites differ in anatomy, not only in scanner.** Each patient has a phenotype
  (:data:`PHENOTYPES`: normal, dilated, hypertrophic, infarct with a thinned wall segment,
  enlarged RV). A site's mix of phenotypes is drawn from a Dirichlet of concentration
  ``site_skew`` (large: every site alike; small: each site mostly one phenotype), so the
  feature exchange has something to add for sites that lack a phenotype.

Off unless asked (``data.shape_variation``, :func:`draw_shape`): outlines that depart from the
phenotype's ellipses, patient by patient and slice by slice (irregular wall thickness, the RV's
outline and insertion), between-patient variation that augmentation cannot copy.

Scanners differ as in v1 (:func:`fcl_ray.data.synthetic.site_profile`). The heart fills
more of the field of view than in v1 (the readers crop around the heart), so the
myocardium is about 2.5-4 px thick at 48 px. Everything is deterministic from
``(seed, site, case)``; frames of a cine follow :func:`fcl_ray.data.synthetic.contraction`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from fcl_ray.data.synthetic import (CINE_FRAMES, SiteProfile, Volume, _smooth_field, acquire,
                                    case_name, cine_plan, contraction, site_profile)

PHENOTYPES = ("normal", "dilated", "hypertrophic", "infarct", "rv_enlarged")
DEFAULT_SITE_SKEW = 1.0
# Per-patient field of view (how the scan was planned): a patient's anatomy is drawn at a scale
# from this range. One labeled patient shows one scale; several cover the range.
DEFAULT_FIELD_OF_VIEW = (0.75, 1.3)
# Motion ghosts (``data.motion_ghosts``): off unless asked, so the committed rows reproduce.
DEFAULT_MOTION_GHOSTS = 0.0
# Slice-to-slice gain jitter (``data.slice_gain_jitter``): standard deviation of a slice's
# receive gain around the patient's slope along the stack.
DEFAULT_SLICE_GAIN_JITTER = 0.08
# Contour shape variation (``data.shape_variation``): off unless asked, so the committed rows
# reproduce.
DEFAULT_SHAPE_VARIATION = 0.0
# Harmonics of a contour's radius that shape variation draws (1 would only shift the contour).
_SHAPE_ORDERS = (2, 3, 4)


@dataclass(frozen=True)
class Ghosting:
    """A patient's motion ghosts: faint copies of the beating heart repeated along the
    phase-encode axis, the commonest cine artefact (arrhythmia, poor breath-holds). How strong
    they are is the patient's, so one labeled patient shows one level of them.

    Ghosts of the breathing body wall's fat, and a strength that varies slice by slice, were
    tried (commit 5e87004) and dropped: bright fat rings across the heart cut the upper bound
    (random init N=8) by 0.08 at seed 0 (results/v2, "Motion ghosts")."""
    strength: float       # each copy's fraction of the heart's signal (0: none)
    axis: int             # phase-encode axis of the image (0: rows, 1: columns)
    spacing: float        # distance between the heart and its copies, fraction of the image


def draw_ghosting(seed: int, site: int, case: int, max_strength: float) -> Ghosting:
    """Patient ``case``'s ghosting, strength uniform in [0, max_strength], from its own random
    stream (the anatomy's draws are untouched, so max_strength 0 renders the phantom as before)."""
    rng = np.random.default_rng([seed, site, case, 7717])
    return Ghosting(strength=float(rng.uniform(0.0, max_strength)), axis=int(rng.integers(0, 2)),
                    spacing=float(rng.uniform(0.25, 0.45)))


@dataclass(frozen=True)
class ContourShape:
    """How one contour departs from its ellipse: the relative change of its radius with the
    angle, ``1 + sum_k a_k cos(k angle) + b_k sin(k angle)`` over :data:`_SHAPE_ORDERS`, with
    coefficients that go linearly from the base's (``base``) to the apex's (``apex``), so
    every slice of a stack has its own outline. Each array is ``(a_2.., b_2..)``."""
    base: np.ndarray
    apex: np.ndarray

    def radius_scale(self, angle: np.ndarray, th: float) -> np.ndarray:
        """The factor on the ellipse's radius at each ``angle`` of the slice at height ``th``."""
        coeffs = (1.0 - th) * self.base + th * self.apex
        half = len(_SHAPE_ORDERS)
        scale = np.ones_like(angle)
        for i, k in enumerate(_SHAPE_ORDERS):
            scale += coeffs[i] * np.cos(k * angle) + coeffs[half + i] * np.sin(k * angle)
        return scale


@dataclass(frozen=True)
class Shape:
    """A patient's ventricular shape beyond the phenotype's ellipses: irregular epicardial and
    endocardial outlines (so the wall's thickness varies around the ring, as regional
    hypertrophy and remodelling make it), an RV with its own outline, turned about the LV (where
    it inserts on the septum). No rotation, zoom or flip of one patient's images makes
    another's: this is between-patient variation that augmentation cannot copy."""
    epicardium: ContourShape
    endocardium: ContourShape
    rv: ContourShape
    rv_turn: float        # the RV's turn about the LV centre (radians)


def draw_shape(seed: int, site: int, case: int, variation: float) -> Optional[Shape]:
    """Patient ``case``'s shape from its own random stream (the anatomy's draws are untouched,
    so ``variation`` 0 renders the phantom as before, and gives None). The k-th harmonic's
    coefficients are uniform in +-variation/(k-1). Measured at 48 px, mid-ventricle: the wall
    thickness's coefficient of variation around the ring is 0.27 at 0.15 and 0.38 at 0.25,
    against 0.12 with the ellipses (``tests/unit/test_phantom_v2.py``)."""
    if variation <= 0:
        return None
    rng = np.random.default_rng([seed, site, case, 5381])
    limit = np.tile([variation / (k - 1) for k in _SHAPE_ORDERS], 2)

    def contour() -> ContourShape:
        return ContourShape(base=rng.uniform(-limit, limit), apex=rng.uniform(-limit, limit))

    return Shape(epicardium=contour(), endocardium=contour(), rv=contour(),
                 rv_turn=float(rng.uniform(-2.0, 2.0) * variation))


def phenotype_mix(seed: int, site: int, site_skew: float,
                  phenotypes: Sequence[str] = PHENOTYPES) -> np.ndarray:
    """Site ``site``'s phenotype proportions: a Dirichlet draw of concentration ``site_skew``
    per phenotype (seeded by site, so a site's mix does not depend on how many sites exist)."""
    rng = np.random.default_rng([seed, site, 3571])
    mix = rng.dirichlet(np.full(len(phenotypes), float(site_skew)))
    # A tiny concentration can underflow to an all-zero draw: give it to the largest entry.
    return mix / mix.sum() if mix.sum() > 0 else np.eye(len(phenotypes))[int(np.argmax(mix))]


def patient_phenotype(seed: int, site: int, case: int, site_skew: float,
                      phenotypes: Sequence[str] = PHENOTYPES) -> str:
    """The phenotype of one patient, drawn from its site's mix."""
    rng = np.random.default_rng([seed, site, case, 2909])
    return phenotypes[int(rng.choice(len(phenotypes), p=phenotype_mix(seed, site, site_skew,
                                                                        phenotypes)))]


@dataclass(frozen=True)
class Heart:
    """Ventricles of one patient (lengths in half-FOV units)."""
    phenotype: str
    lv_radius: float      # outer LV radius at the base
    wall: float           # myocardial wall thickness
    aspect: float
    rv_size: float
    rv_extent: float      # fraction of the way down where the RV ends
    infarct_angle: float  # centre of the thinned segment (infarct only)
    infarct_width: float  # its angular half-width (0: none)
    contractility: float  # scales the systolic shrink (low in dilated / infarct hearts)
    angle: float
    cx: float
    cy: float


@dataclass(frozen=True)
class Habitus:
    """Everything around the heart: the slice-wide anatomy that varies between patients."""
    body_rx: float
    body_ry: float
    fat: float            # subcutaneous fat thickness (bright in bSSFP)
    fat_level: float      # its brightness
    arms: bool
    liver_start: float    # position t where the liver dome appears
    liver_level: float
    stomach_start: float
    stomach_size: float
    stomach_level: float  # fluid (bright), food (grey) or gas (dark)
    epi_fat: float        # epicardial fat thickness
    aorta_r: float
    blood: float
    muscle: float
    tissue: float
    t_positions: np.ndarray
    slice_gain: np.ndarray  # coil sensitivity along the stack: a per-patient slope + jitter
    texture: np.ndarray
    plane_angle: float    # in-plane rotation of the short-axis view (how it was planned)
    fov: float            # field of view: > 1 shows the anatomy smaller


# Phenotype -> (lv_radius range, wall range, rv_size range, rv_extent range, contractility range)
_HEARTS = {
    "normal":       ((0.36, 0.46), (0.11, 0.14), (0.8, 1.2), (0.65, 0.85), (0.9, 1.1)),
    "dilated":      ((0.48, 0.58), (0.08, 0.10), (0.8, 1.2), (0.65, 0.85), (0.35, 0.6)),
    "hypertrophic": ((0.36, 0.44), (0.17, 0.23), (0.7, 1.0), (0.6, 0.8), (1.1, 1.3)),
    "infarct":      ((0.40, 0.50), (0.11, 0.14), (0.8, 1.2), (0.65, 0.85), (0.5, 0.75)),
    "rv_enlarged":  ((0.34, 0.42), (0.10, 0.13), (1.5, 2.0), (0.85, 0.97), (0.8, 1.0)),
}


def _draw_heart(rng: np.random.Generator, phenotype: str, zoom: float) -> Heart:
    radius, wall, rv_size, rv_extent, contract = _HEARTS[phenotype]
    infarct = phenotype == "infarct"
    return Heart(phenotype,
                 lv_radius=rng.uniform(*radius) * zoom, wall=rng.uniform(*wall) * zoom,
                 aspect=rng.uniform(0.85, 1.15), rv_size=rng.uniform(*rv_size),
                 rv_extent=rng.uniform(*rv_extent),
                 infarct_angle=rng.uniform(-np.pi, np.pi),
                 infarct_width=rng.uniform(0.5, 0.9) if infarct else 0.0,
                 contractility=rng.uniform(*contract), angle=rng.uniform(-0.5, 0.5),
                 cx=rng.uniform(-0.25, 0.25), cy=rng.uniform(-0.25, 0.25))


def _draw_habitus(rng: np.random.Generator, size: int, depth: int,
                  field_of_view: tuple[float, float] = DEFAULT_FIELD_OF_VIEW,
                  slice_gain_jitter: float = DEFAULT_SLICE_GAIN_JITTER) -> Habitus:
    blood = rng.uniform(0.75, 1.0)
    muscle = rng.uniform(0.12, 0.42)
    return Habitus(
        body_rx=rng.uniform(0.85, 1.5), body_ry=rng.uniform(0.7, 1.2),
        fat=rng.uniform(0.0, 0.3), fat_level=rng.uniform(0.5, 1.25), arms=bool(rng.random() < 0.5),
        liver_start=rng.uniform(0.25, 0.7), liver_level=rng.uniform(0.4, 0.8),
        stomach_start=rng.uniform(0.3, 0.8), stomach_size=rng.uniform(0.0, 0.5),
        stomach_level=float(rng.choice([rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0),
                                        rng.uniform(0.35, 0.55), rng.uniform(0.02, 0.1)])),
        epi_fat=rng.uniform(0.0, 0.05), aorta_r=rng.uniform(0.07, 0.11),
        blood=blood, muscle=muscle, tissue=float(np.clip(muscle + rng.uniform(-0.05, 0.3), 0.1, 0.6)),
        t_positions=np.linspace(rng.uniform(0.0, 0.12), rng.uniform(0.85, 1.0), depth),
        # Receive coils see some slices brighter than others (nearer the coil, breathing):
        # a slope of either sign plus jitter, so a slice's brightness does not give its place.
        # (The jitter's size scales the same normal draws: the other draws do not move.)
        slice_gain=(1.0 + rng.uniform(-0.6, 0.6) * (np.linspace(-0.5, 0.5, depth))
                    + rng.normal(0.0, slice_gain_jitter, depth)),
        texture=_smooth_field(rng, size, 2.0),
        plane_angle=rng.uniform(-0.7, 0.7), fov=rng.uniform(*field_of_view))


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / max(rx, 1e-6)) ** 2 + ((y - cy) / max(ry, 1e-6)) ** 2 <= 1.0


def _paint_surroundings(img, gx, gy, hb: Habitus, t: float) -> None:
    """Body, fat, arms, lungs, spine, descending aorta, liver and stomach at position t.

    Image axes: x to the patient's left, y posterior (down in the image)."""
    fat_level = hb.fat_level
    oy = 0.15   # the body's centre lies behind the heart
    if hb.arms:
        for side in (-1, 1):
            arm = _ellipse(gx, gy, side * (hb.body_rx + 0.3), oy, 0.28, 0.35)
            img[arm] = fat_level
            img[_ellipse(gx, gy, side * (hb.body_rx + 0.3), oy, 0.22, 0.28)] = hb.tissue
    outer = _ellipse(gx, gy, 0, oy, hb.body_rx, hb.body_ry)
    inner = _ellipse(gx, gy, 0, oy, hb.body_rx - hb.fat, hb.body_ry - hb.fat)
    img[outer] = fat_level
    img[inner] = hb.tissue + 0.08 * hb.texture[inner]
    # Lungs: lateral and behind the heart, shrinking as the diaphragm rises toward the apex.
    for side, shrink in ((-1, 0.7), (1, 0.45)):     # the right lung loses more to the liver
        scale = max(0.0, 1.0 - shrink * t)
        lung = _ellipse(gx, gy, side * 0.75, 0.1, 0.32 * scale + 0.05, 0.6 * scale + 0.05)
        img[lung & inner] = 0.06
    # Spine (vertebral body, bright spinal canal) and the descending aorta beside it.
    spine_y = oy + hb.body_ry - hb.fat - 0.3
    img[_ellipse(gx, gy, 0, spine_y, 0.14, 0.12) & inner] = hb.tissue * 0.8
    img[_ellipse(gx, gy, 0, spine_y + 0.16, 0.05, 0.05) & inner] = hb.blood * 0.9
    img[_ellipse(gx, gy, 0.2, spine_y - 0.1, hb.aorta_r, hb.aorta_r) & inner] = hb.blood * 0.95
    # Liver dome (patient's right) and stomach (left) rise from below toward the apex.
    if t > hb.liver_start:
        grow = min(1.0, (t - hb.liver_start) / 0.35)
        liver = _ellipse(gx, gy, -0.55, 0.7 - 0.25 * grow, 0.65 * grow + 0.1, 0.5 * grow + 0.05)
        img[liver & inner] = hb.liver_level + 0.05 * hb.texture[liver & inner]
    if t > hb.stomach_start and hb.stomach_size > 0.05:
        grow = min(1.0, (t - hb.stomach_start) / 0.3)
        r = hb.stomach_size * (0.4 + 0.6 * grow)
        stomach = _ellipse(gx, gy, 0.7, 0.45 - 0.1 * grow, r, r * 0.8)
        img[stomach & inner] = hb.stomach_level


class _Outlines:
    """The LV's epicardial and endocardial outlines and the septum in one slice: the
    phenotype's ellipses, bent by the patient's :class:`Shape` when it has one."""

    def __init__(self, hx, hy, aspect: float, outer: float, cavity: float, wall: float,
                 th: float, shape: Optional[Shape]):
        self.hx, self.hy, self.aspect, self.shape = hx, hy, aspect, shape
        self.outer, self.cavity = outer, cavity
        if shape is not None:
            # polar coordinates in which the LV's ellipses are circles
            self.rho = np.hypot(hx / aspect, hy)
            angle = np.arctan2(hy, hx / aspect)
            self.outer_r = outer * shape.epicardium.radius_scale(angle, th)
            # the endocardium stays inside the epicardium: at least 30 % of the wall remains
            self.cavity_r = np.clip(cavity * shape.endocardium.radius_scale(angle, th), 0.0,
                                    self.outer_r - 0.3 * wall) if cavity > 0 else None

    def inside_outer(self, margin: float = 0.0):
        """Inside the epicardium grown by ``margin`` (negative: shrunk)."""
        if self.shape is None:
            # the ellipses as committed: the septum's (positive) margin is added to both
            # axes; a thinned wall's (negative) one shrinks the radius, the aspect kept
            ry = self.outer + margin
            rx = ry * self.aspect if margin <= 0 else self.outer * self.aspect + margin
            return _ellipse(self.hx, self.hy, 0, 0, rx, ry)
        return self.rho <= self.outer_r + margin

    def inside_cavity(self):
        """Inside the endocardium (the LV cavity)."""
        if self.shape is None:
            return _ellipse(self.hx, self.hy, 0, 0, self.cavity * self.aspect, self.cavity)
        if self.cavity_r is None:
            return np.zeros(self.hx.shape, bool)
        return self.rho <= self.cavity_r


def _rv_region(hx, hy, outer: float, rv_rx: float, rv_ry: float, th: float,
               shape: Optional[Shape]):
    """The RV's ellipse beside the septum (before the septum is cut out of it), turned about
    the LV centre and bent by the patient's shape when it has one."""
    cx, cy = -(outer + rv_rx * 0.45), -outer * 0.1
    if shape is None:
        return _ellipse(hx, hy, cx, cy, rv_rx, rv_ry)
    c, s = np.cos(shape.rv_turn), np.sin(shape.rv_turn)
    cx, cy = c * cx - s * cy, s * cx + c * cy
    u = (c * (hx - cx) + s * (hy - cy)) / max(rv_rx, 1e-6)
    w = (-s * (hx - cx) + c * (hy - cy)) / max(rv_ry, 1e-6)
    return np.hypot(u, w) <= shape.rv.radius_scale(np.arctan2(w, u), th)


def _paint_heart(img, label, hx, hy, heart: Heart, hb: Habitus, th: float,
                 cavity_shrink: float, rv_shrink: float, shape: Optional[Shape] = None) -> None:
    """Atria and great vessels (base), ventricles, papillary muscles and apical cap at th.

    ``hx, hy`` are in the heart's rotated frame; ``cavity_shrink``/``rv_shrink`` the systolic
    fraction lost (0 at ED); ``shape`` the patient's outlines beyond the ellipses (None: none)."""
    blood, muscle, tex = hb.blood, hb.muscle, hb.texture
    outer = heart.lv_radius * (1.0 - 0.5 * th ** 1.8)
    wall = heart.wall * (1.0 + 0.3 * th)
    cavity = max(outer - wall, 0.0) * (1.0 - 0.85 * th ** 5)
    if cavity_shrink > 0:   # systole: cavity shrinks, myocardial area kept, wall thickens
        shrunk = cavity * (1.0 - cavity_shrink)
        outer = float(np.sqrt(max(outer ** 2 - cavity ** 2 + shrunk ** 2, shrunk ** 2)))
        cavity = shrunk
    a = heart.aspect
    # Base: atria behind the ventricles, aortic root and pulmonary trunk in front.
    if th < 0.25:
        k = 1.0 - th / 0.25
        # (x, y, rx, ry, brightness): left atrium, right atrium, aortic root, pulmonary trunk,
        # each inside a thin dark wall, as the valve planes and vessel walls are in cine.
        for x, y, rx, ry, level in ((0.15, outer + 0.2 * k, 0.28 * k + 0.04, 0.16 * k + 0.03, 0.8),
                                    (-outer * 0.7, outer + 0.25 * k, 0.2 * k + 0.04, 0.14 * k + 0.04, 0.75),
                                    (outer * 0.9, -outer - 0.08, 0.1, 0.1, 0.95),
                                    (-outer * 0.3, -outer - 0.2, 0.09, 0.09, 0.9)):
            img[_ellipse(hx, hy, x, y, rx + 0.05, ry + 0.05)] = muscle
            img[_ellipse(hx, hy, x, y, rx, ry)] = blood * level
    fat = hb.epi_fat * (0.5 + 1.5 * th)   # epicardial fat gathers toward the apex (fat pad)
    if fat > 0.02:
        ring = _ellipse(hx, hy, 0, fat * 0.5, outer * a + fat, outer + fat)
        img[ring] = 0.6 * blood + 0.15
    outlines = _Outlines(hx, hy, a, outer, cavity, wall, th, shape)
    lv_out = outlines.inside_outer()
    lv_cav = outlines.inside_cavity()
    theta = np.arctan2(hy, hx)
    if heart.infarct_width > 0:   # a thinned (infarcted) wall segment: the cavity bulges out
        gap = np.abs(np.angle(np.exp(1j * (theta - heart.infarct_angle))))
        thin = outlines.inside_outer(-0.35 * wall)
        lv_cav = lv_cav | (thin & (gap < heart.infarct_width) & (cavity > 0.02))
    if th < 0.1 and cavity > 0:   # LV outflow tract: the ring opens toward the aortic root
        gap = np.abs(np.angle(np.exp(1j * (theta + 0.9))))
        lv_cav = lv_cav | (lv_out & (gap < (0.1 - th) * 6.0))
    # Right ventricle: a crescent attached to the septum, ending at rv_extent.
    rv_scale = heart.rv_size * max(0.0, 1.0 - (th / heart.rv_extent) ** 2)
    rv_scale *= 1.0 - rv_shrink
    rv = np.zeros_like(lv_out)
    if rv_scale > 0.08:
        rv_rx, rv_ry = outer * 0.7 * rv_scale, outer * 1.35 * rv_scale ** 0.5
        septum = outlines.inside_outer(0.04)
        rv = _rv_region(hx, hy, outer, rv_rx, rv_ry, th, shape) & ~septum
    myo = lv_out & ~lv_cav
    img[rv] = blood * 0.95 + 0.05 * tex[rv]
    img[myo] = muscle + 0.05 * tex[myo]
    img[lv_cav] = blood + 0.05 * tex[lv_cav]
    if 0.25 < th < 0.75 and cavity > 0.08:   # papillary muscles (labelled LV cavity, as ACDC)
        for k in (0, 1):
            ang = 0.9 + k * 1.5
            px, py = 0.55 * cavity * np.cos(ang), 0.55 * cavity * np.sin(ang)
            img[_ellipse(hx, hy, px, py, 0.2 * cavity, 0.2 * cavity) & lv_cav] = muscle
    label[rv] = 1
    label[myo] = 2
    label[lv_cav] = 3


def _add_ghosts(img: np.ndarray, label: np.ndarray, ghosting: Ghosting) -> np.ndarray:
    """``img`` plus two copies of its moving part (the ventricles: blood and myocardium)
    shifted both ways along the phase-encode axis, wrapping as aliasing does. The copies are
    not labelled: rejecting them takes context (where a heart can be), not brightness."""
    moving = img * (label > 0)
    shift = int(round(ghosting.spacing * img.shape[0]))
    copies = np.roll(moving, shift, ghosting.axis) + np.roll(moving, -shift, ghosting.axis)
    return img + ghosting.strength * copies


def _render(heart: Heart, hb: Habitus, prof: SiteProfile, size: int, noise_scale: float,
            rng: np.random.Generator, descent: float = 0.0, c: float = 0.0,
            lv_shrink: float = 0.0, rv_shrink: float = 0.0,
            ghosting: Optional[Ghosting] = None,
            shape: Optional[Shape] = None) -> tuple[np.ndarray, np.ndarray]:
    """Image and label stack at contraction ``c`` (0 = ED), scanner noise from ``rng``."""
    lin = np.linspace(-1, 1, size)
    gy, gx = np.meshgrid(lin, lin, indexing="ij")             # the scanner's grid
    cp, sp = np.cos(hb.plane_angle), np.sin(hb.plane_angle)   # the patient's anatomy in it
    ax, ay = (cp * gx + sp * gy) * hb.fov, (-sp * gx + cp * gy) * hb.fov
    cs, sn = np.cos(heart.angle), np.sin(heart.angle)
    hx = cs * (ax - heart.cx) + sn * (ay - heart.cy)
    hy = -sn * (ax - heart.cx) + cs * (ay - heart.cy)
    bias = np.exp(prof.bias[0] * gx + prof.bias[1] * gy + prof.bias[2] * gx * gy
                  + prof.bias[3] * gx ** 2 + prof.bias[4] * gy ** 2)
    depth = len(hb.t_positions)
    images = np.zeros((depth, size, size), np.float32)
    labels = np.zeros((depth, size, size), np.uint8)
    for i, t in enumerate(hb.t_positions):
        img = np.zeros((size, size), np.float32)
        label = np.zeros((size, size), np.uint8)
        _paint_surroundings(img, ax, ay, hb, float(t))
        th = max(float(t) - descent * c, 0.0)
        _paint_heart(img, label, hx, hy, heart, hb, th,
                     lv_shrink * c * heart.contractility, rv_shrink * c, shape)
        if ghosting is not None and ghosting.strength > 0:
            img = _add_ghosts(img, label, ghosting)
        images[i] = acquire(img, prof, bias, noise_scale, rng, hb.slice_gain[i])
        labels[i] = label
    return images, labels


def make_frames(seed: int, site: int, case: int, frames: Sequence[int],
                cycle: int = CINE_FRAMES, size: int = 48, slices: tuple[int, int] = (8, 12),
                noise_scale: float = 1.0, site_skew: float = DEFAULT_SITE_SKEW,
                phenotypes: Sequence[str] = PHENOTYPES,
                phenotype: Optional[str] = None,
                field_of_view: tuple[float, float] = DEFAULT_FIELD_OF_VIEW,
                motion_ghosts: float = DEFAULT_MOTION_GHOSTS,
                slice_gain_jitter: float = DEFAULT_SLICE_GAIN_JITTER,
                shape_variation: float = DEFAULT_SHAPE_VARIATION,
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, label) stacks of the given cine frames of one patient, whose phenotype is drawn
    from its site's mix over ``phenotypes`` (``phenotype``: force one instead), whose field
    of view is drawn uniformly from ``field_of_view`` (> 1: the anatomy looks smaller) and
    whose motion ghosts from [0, ``motion_ghosts``] (:func:`draw_ghosting`); each slice's gain
    jitters by ``slice_gain_jitter`` (standard deviation) around the patient's slope; its
    outlines depart from the phenotype's ellipses by ``shape_variation`` (:func:`draw_shape`)."""
    prof = site_profile(seed, site)
    rng = np.random.default_rng([seed, site, case, 20])
    phenotype = phenotype or patient_phenotype(seed, site, case, site_skew, phenotypes)
    depth = int(rng.integers(slices[0], slices[1] + 1))
    heart = _draw_heart(rng, phenotype, prof.zoom)
    habitus = _draw_habitus(rng, size, depth, field_of_view, slice_gain_jitter)
    motion = np.random.default_rng([seed, site, case, 6151])
    lv_shrink, rv_shrink = motion.uniform(0.25, 0.35), motion.uniform(0.2, 0.35)
    descent = motion.uniform(0.02, 0.06)
    ghosting = draw_ghosting(seed, site, case, motion_ghosts)
    shape = draw_shape(seed, site, case, shape_variation)
    out = []
    for f in frames:
        if not 0 <= f < cycle:
            raise ValueError(f"frame {f} not in [0, {cycle})")
        noise = np.random.default_rng([seed, site, case, 4099, f])
        out.append(_render(heart, habitus, prof, size, noise_scale, noise, descent,
                           contraction(f, cycle), lv_shrink, rv_shrink, ghosting, shape))
    return out


def make_cine_site(seed: int, site: int, cases: int, size: int = 48,
                   slices: tuple[int, int] = (8, 12), noise_scale: float = 1.0,
                   cycle: int = CINE_FRAMES, phases: Sequence[str] = ("ED",),
                   extra_frames: int = 0, site_skew: float = DEFAULT_SITE_SKEW,
                   phenotypes: Sequence[str] = PHENOTYPES,
                   field_of_view: tuple[float, float] = DEFAULT_FIELD_OF_VIEW,
                   first_case: int = 0,
                   motion_ghosts: float = DEFAULT_MOTION_GHOSTS,
                   slice_gain_jitter: float = DEFAULT_SLICE_GAIN_JITTER,
                   shape_variation: float = DEFAULT_SHAPE_VARIATION) -> list[Volume]:
    """One site's volumes, ids and order as :func:`fcl_ray.data.synthetic.make_cine_site`."""
    plan = cine_plan(cycle, phases, extra_frames)
    labeled, unlabeled = [], []
    for case in range(first_case, first_case + cases):
        rendered = make_frames(seed, site, case, [f for _, f, _ in plan], cycle, size, slices,
                               noise_scale, site_skew, phenotypes,
                               field_of_view=field_of_view, motion_ghosts=motion_ghosts,
                               slice_gain_jitter=slice_gain_jitter,
                               shape_variation=shape_variation)
        for (name, _, has_mask), (image, label) in zip(plan, rendered):
            vol = Volume(f"{case_name(site, case)}:{name}", image, label if has_mask else None)
            (labeled if has_mask else unlabeled).append(vol)
    return labeled + unlabeled
