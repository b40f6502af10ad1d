"""Cine frames of the synthetic phantom: motion, masks only at ED/ES, ids, patient splits."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from fcl_ray.cli import main
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.data import load_client_volumes, patient_of
from fcl_ray.data.split import patient_split
from fcl_ray.data.synthetic import (contraction, es_frame, make_cine_site, make_frames,
                                    make_site)

SMALL = ["data.image_size=32", "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
         "data.folds=2", "data.clients=2"]


def _cfg(*extra):
    return load_config(None, SMALL + list(extra))


def _area(label, k):
    return int((label == k).sum())


def test_phantom_v1_is_todays_ed_volume_bit_for_bit():
    cfg = _cfg("data.cases_per_client=4", "data.phantom=v1")
    vols = load_client_volumes(cfg, 1)
    ref = make_site(0, 1, 4, 32, (4, 5))
    assert [v.volume_id for v in vols] == [f"{r.volume_id}:ED" for r in ref]
    for v, r in zip(vols, ref):
        assert np.array_equal(v.image, r.image) and np.array_equal(v.label, r.label)


def test_contraction_curve_is_zero_at_ed_one_at_es_and_smooth():
    for frames in (2, 5, 12, 30):
        curve = [contraction(f, frames) for f in range(frames)]
        assert curve[0] == 0.0 and curve[es_frame(frames)] == 1.0
        assert all(0 <= c <= 1 for c in curve)
    curve = np.array([contraction(f, 12) for f in range(12)] + [0.0])   # wraps to next ED
    assert es_frame(12) == 4 and np.abs(np.diff(curve)).max() <= 0.4


def test_frames_shrink_the_cavities_thicken_the_wall_and_leave_the_rest():
    cycle, es = 12, es_frame(12)
    for case in range(3):
        frames = make_frames(0, 0, case, list(range(cycle)), cycle, 48, (8, 8), noise_scale=0)
        assert {img.shape for img, _ in frames} == {(8, 48, 48)}        # same slice count
        lv = np.array([_area(lab, 3) for _, lab in frames])
        rv = np.array([_area(lab, 1) for _, lab in frames])
        myo = np.array([_area(lab, 2) for _, lab in frames])
        assert lv[es] < 0.75 * lv[0] and rv[es] < 0.85 * rv[0]        # ejection
        assert (np.diff(lv[:es + 1]) <= 0).all() and (np.diff(lv[es:]) >= 0).all()
        assert abs(myo[es] - myo[0]) < 0.15 * myo[0]                   # muscle kept: it thickens
        # Smooth: neighbouring frames differ less than ED and ES do.
        steps = [np.abs(frames[k][0] - frames[k + 1][0]).mean() for k in range(cycle - 1)]
        ed_es = np.abs(frames[0][0] - frames[es][0]).mean()
        assert 0 < max(steps) < ed_es
        # Away from the heart (every frame's labels, dilated) the image barely changes.
        heart = binary_dilation(np.any([lab > 0 for _, lab in frames], axis=0),
                                iterations=4, structure=np.ones((1, 3, 3), bool))
        diff = np.abs(frames[0][0] - frames[es][0])
        assert diff[~heart].mean() < 0.2 * diff[heart].mean()


def test_rendering_is_deterministic_and_any_subset_of_frames_agrees():
    a = make_frames(3, 1, 2, [0, 5, es_frame(12)], 12, 32, (5, 6))
    b = make_frames(3, 1, 2, [5], 12, 32, (5, 6))
    assert np.array_equal(a[1][0], b[0][0]) and np.array_equal(a[1][1], b[0][1])
    again = make_frames(3, 1, 2, [0, 5, es_frame(12)], 12, 32, (5, 6))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, again))
    assert not np.array_equal(make_frames(4, 1, 2, [5], 12, 32, (5, 6))[0][0], a[1][0])
    assert not np.array_equal(a[0][0], a[1][0])                          # own noise per frame
    with pytest.raises(ValueError, match="frame 12 not in"):
        make_frames(3, 1, 2, [12], 12, 32, (5, 6))


def test_only_ed_and_es_carry_masks_and_es_has_the_smaller_lv():
    vols = make_cine_site(0, 0, 3, 32, (4, 5), phases=("ED", "ES"), extra_frames=3)
    by_id = {v.volume_id: v for v in vols}
    for v in vols:
        assert (v.label is not None) == v.volume_id.endswith((":ED", ":ES"))
    for case in range(3):
        name = f"site00_case{case:03d}"
        assert _area(by_id[f"{name}:ES"].label, 3) < _area(by_id[f"{name}:ED"].label, 3)
        depths = {len(v.image) for v in vols if patient_of(v.volume_id) == name}
        assert len(depths) == 1                                        # one stack geometry


@pytest.mark.parametrize("phases,extra,labeled_names", [
    ("ed", 0, ["ED"]), ("es", 0, ["ES"]), ("ed_es", 0, ["ED", "ES"]), ("ed", 2, ["ED"]),
    ("ed_es", 3, ["ED", "ES"]), ("ed_es", 10, ["ED", "ES"]),
])
def test_phases_and_extra_frames_give_the_volumes_and_ids(phases, extra, labeled_names):
    cfg = _cfg("data.cases_per_client=3", f"data.phases={phases}", f"data.extra_frames={extra}")
    vols = load_client_volumes(cfg, 0)
    per_patient = len(labeled_names) + extra
    assert len(vols) == 3 * per_patient
    n_lab = 3 * len(labeled_names)
    assert all(v.label is not None for v in vols[:n_lab])              # masks first ...
    assert all(v.label is None for v in vols[n_lab:])                  # ... then extra frames
    assert [v.volume_id for v in vols[:len(labeled_names)]] == \
        [f"site00_case000:{p}" for p in labeled_names]
    extras = [v.volume_id.split(":")[1] for v in vols[n_lab:]
              if patient_of(v.volume_id) == "site00_case000"]
    assert len(extras) == extra and all(e.startswith("t") for e in extras)
    assert {int(e[1:]) for e in extras}.isdisjoint({0, es_frame(12)})  # never ED or ES
    assert len({v.volume_id for v in vols}) == len(vols)


def test_cine_frames_sets_the_cycle():
    vols = load_client_volumes(_cfg("data.cases_per_client=2", "data.cine_frames=4",
                                    "data.extra_frames=2", "data.phases=ed_es"), 0)
    assert [v.volume_id for v in vols if v.volume_id.startswith("site00_case001")] == \
        ["site00_case001:ED", "site00_case001:ES", "site00_case001:t02", "site00_case001:t03"]


def test_patient_split_keeps_a_patients_frames_on_one_side():
    cfg = _cfg("data.cases_per_client=6", "data.phases=ed_es", "data.extra_frames=2",
               "data.folds=3")
    vols = load_client_volumes(cfg, 0)
    ids, has = [v.volume_id for v in vols], [v.label is not None for v in vols]
    pats = lambda idx: {patient_of(ids[i]) for i in idx}  # noqa: E731
    tested = set()
    for fold in range(3):
        for n in (1, 2, 4):
            s = patient_split(ids, has, 3, fold, n, seed=0, client=0)
            assert len(pats(s.labeled)) == n and len(s.labeled) == 2 * n     # N counts patients
            assert not pats(s.test) & pats(s.train)                          # never straddles
            assert all(has[i] for i in s.test + s.labeled)                   # extras: never
            assert all(has[i] or i in s.unlabeled for i in s.train)          # labeled / tested
        tested |= pats(s.test)
    assert len(tested) == 6


def test_client_actor_splits_synthetic_frames_unchanged():
    """The client actor (plain class, no Ray here) uses the same patient split."""
    from fcl_ray.federation.site import ClientSite

    cfg = _cfg("data.cases_per_client=4", "data.phases=ed_es", "data.extra_frames=2",
               "model.features=[8,8,16,16,16,8]", "model.projection_hidden=16",
               "model.projection_dim=8")
    actor = ClientSite(to_dict(cfg), 1, num_threads=1)
    assert (actor.info()["patients"], actor.info()["volumes"]) == (4, 4 * 4)
    split = actor._split(0, 1)
    pool = {actor.volume_ids[i] for i in split.train}
    assert {patient_of(i) for i in pool}.isdisjoint(
        {patient_of(actor.volume_ids[i]) for i in split.test})
    assert sum(":t" in i for i in pool) == 2 * 2                   # 2 training patients x 2 extras
    assert all(":t" not in actor.volume_ids[i] for i in split.labeled + split.test)
    assert len({patient_of(actor.volume_ids[i]) for i in split.labeled}) == 1


@pytest.mark.parametrize("args,key", [
    (["--kind", "synthetic", "--set", "data.extra_frames=11"], "data.extra_frames"),
    (["--kind", "synthetic", "--set", "data.cine_frames=6", "--set", "data.extra_frames=5"],
     "data.extra_frames"),
    (["--kind", "synthetic", "--set", "data.cine_frames=1"], "data.cine_frames"),
    (["--kind", "decathlon", "--root", ".", "--set", "data.cine_frames=12"], "data.cine_frames"),
    (["--kind", "acdc", "--root", ".", "--set", "data.cine_frames=12"], "data.cine_frames"),
    (["--kind", "decathlon", "--root", ".", "--set", "data.extra_frames=2"], "data.extra_frames"),
    (["--kind", "decathlon", "--root", ".", "--set", "data.phases=ed_es"], "data.phases"),
    (["--kind", "synthetic", "--set", "data.cases_per_client=4", "--set", "data.folds=2",
      "--set", "data.phases=ed_es", "--n-labeled", "3"], "finetune.n_labeled"),
])
def test_bad_cine_options_are_one_line_exit_2(args, key, capsys):
    assert main(["data", "check", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"'{key}'" in err


def test_label_budget_counts_patients_not_frames():
    # 4 patients, 2 folds: 2 training patients = 4 labeled ED/ES volumes; N=2 is allowed.
    cfg = _cfg("data.cases_per_client=4", "data.phases=ed_es", "finetune.n_labeled=[2]")
    assert cfg.finetune.n_labeled == [2]
