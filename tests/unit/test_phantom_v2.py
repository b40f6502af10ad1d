"""Phantom v2 (issue 28): deterministic, valid labels, phenotypes that look like themselves,
site mixes that follow data.site_skew, and the loader/config that select it."""
from __future__ import annotations

import numpy as np
import pytest

from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.data import load_client_volumes, phantom_v2, synthetic
from fcl_ray.data.shortcut import global_statistics, probe_accuracy, structure_areas


def _frames(phenotype: str, case: int, frames=(0,)):
    return phantom_v2.make_frames(0, 0, case, list(frames), size=48, slices=(10, 10),
                                  noise_scale=0.6, phenotype=phenotype)


def test_deterministic_per_patient_and_seed():
    (a, la), = _frames("normal", 1)
    (b, lb), = _frames("normal", 1)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    (c, _), = phantom_v2.make_frames(1, 0, 1, [0], size=48, slices=(10, 10), phenotype="normal")
    assert not np.array_equal(a, c)


def test_labels_are_the_four_acdc_classes_and_the_heart_is_in_every_slice():
    (image, label), = _frames("infarct", 2)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2, 3}
    assert all((lab == 2).any() for lab in label)            # myocardium down to the apex
    assert (label[:3] == 1).any() and not (label[-1] == 1).any()   # the RV ends above the apex


def _mean_area(phenotype: str, cls: int, frames=(0,)) -> float:
    return float(np.mean([(_frames(phenotype, c, frames)[0][1] == cls).mean() for c in range(6)]))


def test_phenotypes_look_like_themselves():
    normal_cavity = _mean_area("normal", 3)
    assert _mean_area("dilated", 3) > 1.3 * normal_cavity
    assert _mean_area("hypertrophic", 2) > 1.2 * _mean_area("normal", 2)
    assert _mean_area("rv_enlarged", 1) > 1.5 * _mean_area("normal", 1)


def test_systole_shrinks_the_lv_cavity():
    es = synthetic.es_frame(12)
    (ed, l_ed), (_, l_es) = _frames("normal", 3, (0, es))
    assert (l_es == 3).sum() < 0.85 * (l_ed == 3).sum()


@pytest.mark.parametrize("skew, dominant", [(0.05, (0.85, 1.0)), (100.0, (0.2, 0.35))])
def test_site_skew_sets_how_alike_sites_are(skew, dominant):
    largest = [phantom_v2.phenotype_mix(0, site, skew).max() for site in range(40)]
    assert dominant[0] <= np.mean(largest) <= dominant[1]
    mix = phantom_v2.phenotype_mix(0, 3, skew)
    assert mix.shape == (len(phantom_v2.PHENOTYPES),) and mix.sum() == pytest.approx(1.0)


def test_loader_selects_the_phantom_and_restricts_phenotypes():
    tiny = ["data.clients=2", "data.cases_per_client=4", "data.image_size=32",
            "data.slices_min=4", "data.slices_max=5", "data.partitions=2", "data.folds=2"]
    v1 = load_client_volumes(load_config(None, tiny + ["data.phantom=v1"]), 1)
    ref = synthetic.make_cine_site(0, 1, 4, 32, (4, 5))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(v1, ref))
    v2 = load_client_volumes(load_config(None, tiny), 1)      # v2 is the default
    assert [v.volume_id for v in v2] == [v.volume_id for v in v1]
    assert not np.array_equal(v2[0].image, v1[0].image)
    only = load_config(None, tiny + ["data.phenotypes=[dilated]", "data.site_skew=0.1"])
    assert all(phantom_v2.patient_phenotype(0, 1, c, 0.1, ("dilated",)) == "dilated"
               for c in range(4))
    assert len(load_client_volumes(only, 1)) == 4


@pytest.mark.parametrize("override, key", [
    ("data.phenotypes=[normal,athlete]", "data.phenotypes"),
    ("data.site_skew=0", "data.site_skew"),
    ("data.site_skew=.inf", "data.site_skew"),
    ("data.phantom=v3", "data.phantom"),
    ("data.field_of_view=[1.3,0.75]", "data.field_of_view"),
    ("data.field_of_view=[0.5,.inf]", "data.field_of_view"),
    ("data.field_of_view=[1.0]", "data.field_of_view"),
    ("data.motion_ghosts=-0.1", "data.motion_ghosts"),
    ("data.motion_ghosts=1.5", "data.motion_ghosts"),
    ("data.motion_ghosts=.nan", "data.motion_ghosts"),
    ("data.slice_gain_jitter=-0.01", "data.slice_gain_jitter"),
    ("data.slice_gain_jitter=0.8", "data.slice_gain_jitter"),
    ("data.shape_variation=-0.1", "data.shape_variation"),
    ("data.shape_variation=0.5", "data.shape_variation"),
    ("data.shape_variation=.nan", "data.shape_variation"),
])
def test_bad_phantom_keys_are_one_line(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_v1_has_no_phenotypes_to_mix():
    with pytest.raises(ConfigError, match="data.site_skew"):
        load_config(None, ["data.phantom=v1", "data.site_skew=1"])
    with pytest.raises(ConfigError, match="data.phenotypes"):
        load_config(None, ["data.phantom=v1", "data.phenotypes=[normal]"])


def test_shortcut_probe_reads_a_feature_that_holds_the_partition():
    rng = np.random.default_rng(0)
    part = np.repeat(np.arange(4), 50)
    patient = np.tile(np.arange(50), 4)
    informative = part[:, None] + 0.1 * rng.normal(size=(200, 1))
    assert probe_accuracy(informative, part, patient, 4) > 0.95
    assert probe_accuracy(rng.normal(size=(200, 3)), part, patient, 4) < 0.45


def test_statistics_and_areas_of_slices():
    images = np.zeros((2, 4, 4), np.float32)
    images[1, :2] = 0.9
    assert global_statistics(images)[1].tolist() == pytest.approx([0.45, 0.5, 0.5])
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, 0, :2] = 3
    assert structure_areas(labels)[0].tolist() == [0.0, 0.0, 0.125]


def test_field_of_view_scales_the_anatomy_and_its_default_draws_as_before():
    args = dict(size=48, slices=(10, 10), noise_scale=0.6, phenotype="normal")
    (base, lab), = phantom_v2.make_frames(0, 0, 1, [0], **args)
    (same, _), = phantom_v2.make_frames(0, 0, 1, [0], field_of_view=(0.75, 1.3), **args)
    assert np.array_equal(base, same)
    heart = [(phantom_v2.make_frames(0, 0, c, [0], field_of_view=fov, **args)[0][1] > 0).mean()
             for fov in ((0.7, 0.7), (1.6, 1.6)) for c in range(3)]
    assert np.mean(heart[3:]) < 0.6 * np.mean(heart[:3])      # a larger view: a smaller heart
    with pytest.raises(ConfigError, match="data.field_of_view"):
        load_config(None, ["data.phantom=v1", "data.field_of_view=[0.7,1.6]"])


def _noise_free(case: int, **options):
    """Frame 0 of a normal patient, noise off, so an option's effect is all that differs."""
    (image, label), = phantom_v2.make_frames(0, 0, case, [0], size=48, slices=(10, 10),
                                             noise_scale=0.0, phenotype="normal", **options)
    return image, label


def test_motion_ghosts_copy_the_heart_along_one_axis_and_leave_labels_alone():
    assert np.array_equal(_noise_free(1)[0], _noise_free(1, motion_ghosts=0.0)[0])  # 0: as committed
    case = next(c for c in range(20) if phantom_v2.draw_ghosting(0, 0, c, 0.6).strength > 0.3)
    clean, lab = _noise_free(case)
    ghosted, lab_g = _noise_free(case, motion_ghosts=0.6)
    assert np.array_equal(lab, lab_g)                         # ghosts are not labelled
    changed = np.abs(ghosted - clean) > 1e-3
    assert changed.any() and not (changed & (lab > 0)).all()
    assert changed[lab == 0].mean() > 0.02                    # they land outside the heart
    strengths = [phantom_v2.draw_ghosting(0, 0, c, 0.6).strength for c in range(40)]
    assert 0 <= min(strengths) and max(strengths) <= 0.6 and np.std(strengths) > 0.1
    with pytest.raises(ConfigError, match="data.motion_ghosts"):
        load_config(None, ["data.phantom=v1", "data.motion_ghosts=0.3"])


def test_slice_gain_jitter_moves_only_the_gain_of_each_slice():
    base, lab = _noise_free(2)
    assert np.array_equal(base, _noise_free(2, slice_gain_jitter=0.08)[0])  # 0.08: as committed
    more, lab_more = _noise_free(2, slice_gain_jitter=0.2)
    assert np.array_equal(lab, lab_more)                      # the anatomy is untouched
    per_slice = more.mean((1, 2)) / base.mean((1, 2))         # a gain per slice, nothing else
    assert np.std(per_slice) > 0.03
    with pytest.raises(ConfigError, match="data.slice_gain_jitter"):
        load_config(None, ["data.phantom=v1", "data.slice_gain_jitter=0.1"])


def _wall_thickness_spread(label: np.ndarray) -> float:
    """How much the myocardium's thickness varies around the ring of one slice: the
    coefficient of variation of its pixel count along 24 rays from the LV cavity's centre."""
    cy, cx = np.argwhere(label == 3).mean(0)
    counts = []
    for angle in np.linspace(0, 2 * np.pi, 24, endpoint=False):
        steps = np.arange(0, label.shape[0], 0.25)
        ys = np.clip(np.round(cy + steps * np.sin(angle)).astype(int), 0, label.shape[0] - 1)
        xs = np.clip(np.round(cx + steps * np.cos(angle)).astype(int), 0, label.shape[1] - 1)
        counts.append((label[ys, xs] == 2).sum() * 0.25)
    return float(np.std(counts) / np.mean(counts))


def test_shape_variation_bends_the_outlines_and_nothing_else():
    base, lab = _noise_free(4)
    assert np.array_equal(base, _noise_free(4, shape_variation=0.0)[0])   # 0: as committed
    assert phantom_v2.draw_shape(0, 0, 4, 0.0) is None
    bent, lab_bent = _noise_free(4, shape_variation=0.25)
    assert set(np.unique(lab_bent)) <= {0, 1, 2, 3}
    assert all((s == 2).any() for s in lab_bent)                  # myocardium down to the apex
    changed = (np.abs(bent - base) > 1e-6) | (lab != lab_bent)
    near_heart = np.zeros_like(changed)
    for i, slice_labels in enumerate((lab > 0) | (lab_bent > 0)):
        rows, cols = np.nonzero(slice_labels)
        if rows.size:
            near_heart[i, rows.min() - 3:rows.max() + 4, cols.min() - 3:cols.max() + 4] = True
    assert changed.any() and not (changed & ~near_heart).any()   # only the heart moved
    # the wall's thickness varies around the ring far more than the ellipses let it
    mid = 5
    spread = [_wall_thickness_spread(_noise_free(c, shape_variation=0.25)[1][mid])
              for c in range(6)]
    plain = [_wall_thickness_spread(_noise_free(c)[1][mid]) for c in range(6)]
    assert np.mean(spread) > 1.5 * np.mean(plain)
    # each patient its own shape, the same every time
    shape = phantom_v2.draw_shape(0, 0, 4, 0.25)
    assert np.array_equal(shape.rv.apex, phantom_v2.draw_shape(0, 0, 4, 0.25).rv.apex)
    assert not np.array_equal(shape.rv.apex, phantom_v2.draw_shape(0, 0, 5, 0.25).rv.apex)
    with pytest.raises(ConfigError, match="data.shape_variation"):
        load_config(None, ["data.phantom=v1", "data.shape_variation=0.2"])
