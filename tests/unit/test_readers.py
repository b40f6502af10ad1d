"""Real-dataset readers on tiny datasets written in the real layouts (tests/nifti_factories)."""
from __future__ import annotations

import gzip
import shutil
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from nifti_factories import (affine, heart, save, write_acdc, write_decathlon,  # noqa: E402
                             write_mnms, write_mnms_csv)

from fcl_ray.cli import main  # noqa: E402
from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.data import DataError, load_client_volumes  # noqa: E402
from fcl_ray.data.split import patient_split  # noqa: E402

WRITERS = {"acdc": write_acdc, "mnms": write_mnms, "decathlon": write_decathlon}


def cfg_for(kind, root, tmp_path, *extra):
    return load_config(None, [f"data.kind={kind}", f"data.root={root}", "data.clients=2",
                              "data.folds=2", "data.image_size=32", "data.spacing=1.5",
                              "data.partitions=2", f"data.cache_dir={tmp_path / 'cache'}",
                              *extra])


@pytest.mark.parametrize("kind", ["acdc", "mnms", "decathlon"])
def test_every_layout_loads_square_volumes_with_project_labels(kind, tmp_path):
    root = WRITERS[kind](tmp_path / kind)
    cfg = cfg_for(kind, root, tmp_path)
    ids = []
    for client in range(2):
        vols = load_client_volumes(cfg, client)
        assert len(vols) >= 2
        for v in vols:
            assert v.image.dtype == np.float32 and v.image.shape[1:] == (32, 32)
            assert v.label.shape == v.image.shape and v.label.dtype == np.uint8
            allowed = {0, 1} if kind == "decathlon" else {0, 1, 2, 3}
            assert set(np.unique(v.label)) <= allowed and v.label.any()
        ids += [v.volume_id for v in vols]
    assert len(ids) == len(set(ids))                  # random split: disjoint clients


def test_acdc_frames_are_base_first_and_in_plane_resampled(tmp_path):
    root = write_acdc(tmp_path / "acdc", apex_first=1)
    cfg = cfg_for("acdc", root, tmp_path, "data.clients=1")
    vols = {v.volume_id: v for v in load_client_volumes(cfg, 0)}
    for v in vols.values():
        area = (v.label > 0).reshape(len(v.label), -1).sum(1)
        assert area[0] > area[-1]                     # base (big) first, apex (small) last
        lv = (v.label == 3).sum(axis=(1, 2))
        assert lv[0] > 0                              # labels kept: 3 is the LV
    # patient002 is stored apex-first with a flipped axis; depth (z) is kept.
    raw = nib.load(str(root / "training/patient002/patient002_frame01.nii.gz"))
    assert len(vols["patient002:ED"].image) == raw.shape[2]


def test_mnms_labels_are_remapped_to_project_convention(tmp_path):
    root = write_mnms(tmp_path / "mnms", vendors=("A", "B"))
    cfg = cfg_for("mnms", root, tmp_path, "data.clients=1", "data.folds=2")
    for v in load_client_volumes(cfg, 0):
        # The LV (project 3) is the centre of the factory's heart; RV (1) sits beside it.
        d, h, w = v.label.shape
        centre = v.label[0, h // 2 - 3:h // 2 + 4, w // 2 - 3:w // 2 + 4]
        assert (centre == 3).mean() > 0.5


def test_by_site_split_gives_one_client_per_vendor_or_centre(tmp_path):
    root = write_mnms(tmp_path / "mnms", vendors=("A", "A", "B", "B", "C", "C"))
    cfg = cfg_for("mnms", root, tmp_path, "data.split=by_site", "data.clients=3")
    for client, vendor in enumerate("ABC"):
        assert {v.volume_id[0] for v in load_client_volumes(cfg, client)} == {vendor}
    wrong = cfg_for("mnms", root, tmp_path, "data.split=by_site", "data.clients=2")
    with pytest.raises(DataError, match="3 vendors .* set data.clients=3"):
        load_client_volumes(wrong, 0)
    acdc = cfg_for("acdc", write_acdc(tmp_path / "acdc"), tmp_path, "data.split=by_site")
    with pytest.raises(DataError, match="needs 'vendor' metadata"):
        load_client_volumes(acdc, 0)


def test_by_group_split_reads_info_cfg_groups(tmp_path):
    from fcl_ray.data.readers import client_cases
    from fcl_ray.data.sites import site_names
    root = write_acdc(tmp_path / "acdc", n_cases=6, groups=("NOR", "DCM", "HCM"))
    cfg = cfg_for("acdc", root, tmp_path, "data.split=by_group", "data.clients=3")
    groups, _ = client_cases(cfg.data)
    assert [[c.case_id for c in g] for g in groups] == [["patient002", "patient005"],
                                                        ["patient003", "patient006"],
                                                        ["patient001", "patient004"]]
    assert site_names(groups, cfg.data) == ["group DCM", "group HCM", "group NOR"]
    assert {v.volume_id for v in load_client_volumes(cfg, 0)} == {"patient002:ED",
                                                                   "patient005:ED"}
    wrong = cfg_for("acdc", root, tmp_path, "data.split=by_group", "data.clients=2")
    with pytest.raises(DataError, match=r"3 groups \(DCM, HCM, NOR\) .* set data.clients=3$"):
        client_cases(wrong.data)
    mixed = cfg_for("acdc", root, tmp_path, "data.split=by_group", "data.site_skew=0.5")
    ids = [c.case_id for g in client_cases(mixed.data)[0] for c in g]
    assert sorted(ids) == [f"patient{i:03d}" for i in range(1, 7)]


def test_by_group_split_refuses_a_missing_or_unknown_group(tmp_path):
    root = write_acdc(tmp_path / "acdc", n_cases=4, groups=("NOR", "DCM"))
    info = root / "training/patient002/Info.cfg"
    info.write_text(info.read_text().replace("Group: DCM", "Group: XYZ"))
    cfg = cfg_for("acdc", root, tmp_path, "data.split=by_group")
    with pytest.raises(DataError) as err:
        load_client_volumes(cfg, 0)
    assert str(err.value) == (f"{info}: 'Group: XYZ' is not an ACDC pathology group; "
                              f"data.split=by_group needs one of DCM, HCM, MINF, NOR, RV")
    info.write_text("ED: 1\nES: 3\n")
    with pytest.raises(DataError, match=r"patient002/Info.cfg: no 'Group:' line; "):
        load_client_volumes(cfg, 0)
    assert load_client_volumes(cfg_for("acdc", root, tmp_path), 0)   # other splits: not needed
    for kind in ("mnms", "decathlon"):
        other = cfg_for(kind, WRITERS[kind](tmp_path / kind), tmp_path, "data.split=by_group")
        with pytest.raises(DataError, match=rf"by_group needs 'group' metadata, which "
                                            rf"data.kind={kind} does not have"):
            load_client_volumes(other, 0)


def test_explicit_split_and_per_client_roots(tmp_path):
    root = write_acdc(tmp_path / "acdc", n_cases=4)
    cfg = cfg_for("acdc", root, tmp_path, "data.split=explicit",
                  "data.split_lists=[[patient001,patient004],[patient002,patient003]]")
    assert [v.volume_id for v in load_client_volumes(cfg, 0)] == ["patient001:ED", "patient004:ED"]
    a, b = write_acdc(tmp_path / "siteA", 2, seed=1), write_acdc(tmp_path / "siteB", 3, seed=2)
    per_site = load_config(None, ["data.kind=acdc", f"data.client_roots=[{a},{b}]",
                                  "data.clients=2", "data.folds=2", "data.image_size=32",
                                  "data.partitions=2", f"data.cache_dir={tmp_path / 'c'}"])
    assert len(load_client_volumes(per_site, 0)) == 2 and len(load_client_volumes(per_site, 1)) == 3


def test_cache_is_reused_and_safe_to_delete(tmp_path, monkeypatch):
    root = write_decathlon(tmp_path / "dec", n_cases=2)
    cfg = cfg_for("decathlon", root, tmp_path, "data.clients=1")
    first = load_client_volumes(cfg, 0)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    from fcl_ray.data import preprocess
    monkeypatch.setattr(preprocess, "preprocess_case", None)   # a hit must not preprocess
    again = load_client_volumes(cfg, 0)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "cache")
    assert np.array_equal(load_client_volumes(cfg, 0)[0].label, first[0].label)
    other = cfg_for("decathlon", root, tmp_path, "data.clients=1", "data.spacing=2.0")
    load_client_volumes(other, 0)                     # other settings: another entry
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4


def test_decathlon_classes_from_dataset_json(tmp_path):
    root = write_decathlon(tmp_path / "dec", n_cases=2)
    cfg = cfg_for("decathlon", root, tmp_path, "data.clients=1", "data.classes=[left atrium]")
    assert set(np.unique(load_client_volumes(cfg, 0)[0].label)) == {0, 1}
    bad = cfg_for("decathlon", root, tmp_path, "data.clients=1", "data.classes=[aorta]")
    with pytest.raises(DataError, match="dataset.json: data.classes names 'aorta'"):
        load_client_volumes(bad, 0)


def test_extra_frames_and_patient_split(tmp_path):
    from fcl_ray.data.readers import load_case, one_client_cases
    root = write_acdc(tmp_path / "acdc", n_cases=4, frames=5)
    cfg = cfg_for("acdc", root, tmp_path, "data.clients=1", "data.phases=ed_es",
                  "data.extra_frames=2")
    vols = [v for c in one_client_cases(cfg.data, 0) for v in load_case(c, cfg.data).volumes]
    assert [v.volume_id for v in vols[:4]] == ["patient001:ED", "patient001:ES",
                                             "patient001:t02", "patient001:t05"]
    assert vols[2].label is None and vols[2].image.shape[1:] == (32, 32)
    ids, labeled = [v.volume_id for v in vols], [v.label is not None for v in vols]
    s = patient_split(ids, labeled, folds=2, fold=0, n_labeled=1, seed=0, client=0)
    pat = lambda idx: {ids[i].split(":")[0] for i in idx}  # noqa: E731
    assert len(pat(s.labeled)) == 1 and len(s.labeled) == 2          # ED and ES of 1 patient
    assert not pat(s.test) & (pat(s.labeled) | pat(s.unlabeled))     # no patient on two sides
    assert all(labeled[i] for i in s.test + s.labeled)
    # The client actor loads all of them (it splits by patient with patient_split).
    assert sorted(v.volume_id for v in load_client_volumes(cfg, 0)) == sorted(ids)


def _off_centre_decathlon(root: Path, shift: int = 12) -> Path:
    """Two Decathlon-layout cases whose heart sits ``shift`` voxels off the image centre."""
    import json
    rng = np.random.default_rng(5)
    training = []
    for name in ("la_001", "la_002"):
        img, lab = heart((64, 60, 5), rng)
        img, lab = np.roll(img, shift, axis=0), np.roll(lab, shift, axis=0)
        save(root / "imagesTr" / f"{name}.nii.gz", img, affine((1.5, 1.5, 8.0)))
        save(root / "labelsTr" / f"{name}.nii.gz", lab, affine((1.5, 1.5, 8.0)), np.uint8)
        training.append({"image": f"./imagesTr/{name}.nii.gz",
                         "label": f"./labelsTr/{name}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "rv", "2": "myo", "3": "lv"}, "training": training}))
    return root


@pytest.mark.parametrize("rule", ["intensity", "centre"])
def test_crop_rules_other_than_label_never_look_at_the_mask(rule, tmp_path):
    root = _off_centre_decathlon(tmp_path / "dec")
    cfg = cfg_for("decathlon", root, tmp_path, "data.clients=1", "data.cache=false",
                  f"data.crop={rule}")
    before = load_client_volumes(cfg, 0)
    for path in (root / "labelsTr").glob("*.nii.gz"):          # every mask emptied
        save(path, np.zeros(nib.load(str(path)).shape), affine((1.5, 1.5, 8.0)), np.uint8)
    after = load_client_volumes(cfg, 0)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(before, after))
    assert all(not b.label.any() for b in after)


def test_intensity_crop_follows_an_off_centre_heart_and_label_crop_still_works(tmp_path):
    root = _off_centre_decathlon(tmp_path / "dec", shift=12)
    full = {}
    for path in sorted((root / "labelsTr").glob("*.nii.gz")):
        full[path.name.split(".")[0]] = int((np.asarray(nib.load(str(path)).dataobj) > 0).sum())
    kept = {}
    for rule in ("label", "intensity", "centre"):
        cfg = cfg_for("decathlon", root, tmp_path, "data.clients=1", "data.image_size=48",
                      "data.spacing=1.5", f"data.crop={rule}")
        vols = load_client_volumes(cfg, 0)
        kept[rule] = min((v.label > 0).sum() / full[v.volume_id] for v in vols)
    assert kept["label"] == 1.0                       # the old behaviour, still available
    assert kept["intensity"] > 0.95                   # found the heart without its mask
    assert kept["centre"] < kept["intensity"]         # the image centre cuts this heart
    # Each rule has its own cache entries (one per case).
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3 * 2


def test_cache_key_includes_the_phases(tmp_path):
    root = write_mnms(tmp_path / "mnms", vendors=("A", "B"))
    ed = cfg_for("mnms", root, tmp_path, "data.clients=1", "data.phases=ed")
    both = cfg_for("mnms", root, tmp_path, "data.clients=1", "data.phases=ed_es")
    assert len(load_client_volumes(ed, 0)) == 2
    assert len(load_client_volumes(both, 0)) == 4     # not the cached ED-only entries


def test_data_check_cli_prints_the_plan(tmp_path, capsys):
    root = write_mnms(tmp_path / "mnms")
    code = main(["data", "check", "--kind", "mnms", "--root", str(root), "--split", "by_site",
                 "--clients", "3", "--set", "data.folds=2", "--set", "data.image_size=32",
                 "--set", "data.partitions=2", "--set", f"data.cache_dir={tmp_path / 'c'}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "vendor A: 2 patients" in out and "vendor C: 2 patients" in out
    assert "plan (fold 0, N=1): labeled 1 patients" in out and "[0, 1, 2, 3]" in out
    assert main(["data", "check", "--kind", "synthetic", "--set", "data.clients=2"]) == 0
    acdc = write_acdc(tmp_path / "acdc", groups=("NOR", "DCM"))
    assert main(["data", "check", "--kind", "acdc", "--root", str(acdc), "--split", "by_group",
                 "--clients", "2", "--set", "data.folds=2", "--set", "data.image_size=32",
                 "--set", "data.partitions=2", "--set", f"data.cache_dir={tmp_path / 'c'}"]) == 0
    out = capsys.readouterr().out
    assert "(split by_group)" in out and "group DCM: 2 patients" in out


# ----------------------------------------------------------------------------- bad input
def _break_acdc(case: str):
    """Functions that damage one ACDC patient, and the message expected."""
    def missing_mask(root):
        (root / f"training/{case}/{case}_frame01_gt.nii.gz").unlink()
        return "patient001_frame01_gt.nii.gz: missing file"

    def shape_mismatch(root):
        save(root / f"training/{case}/{case}_frame01_gt.nii.gz",
             np.zeros((10, 10, 4), np.uint8), affine((1.5, 1.5, 8)))
        return r"frame01_gt.nii.gz: mask shape \(10, 10, 4\) does not match image shape"

    def bad_labels(root):
        path = root / f"training/{case}/{case}_frame01_gt.nii.gz"
        img = nib.load(str(path))
        data = np.asarray(img.dataobj).copy()
        data[0, 0, 0] = 7
        save(path, data, img.affine, np.uint8)
        return r"frame01_gt.nii.gz: unexpected label values \[7\]"

    def truncated(root):
        path = root / f"training/{case}/{case}_frame01.nii.gz"
        path.write_bytes(path.read_bytes()[:200])
        return "frame01.nii.gz: truncated or corrupt compressed data"

    def not_gzip(root):
        path = root / f"training/{case}/{case}_frame01.nii.gz"
        path.write_bytes(gzip.decompress(path.read_bytes()))
        return "frame01.nii.gz: not gzip-compressed"

    def nan(root):
        img, _ = heart((36, 40, 4), np.random.default_rng(0))
        img[3, 3, 1] = np.nan
        save(root / f"training/{case}/{case}_frame01.nii.gz", img, affine((1.5, 1.5, 8)))
        return "frame01.nii.gz: contains NaN"

    def constant(root):
        save(root / f"training/{case}/{case}_frame01.nii.gz", np.full((36, 40, 4), 5.0,
             np.float32), affine((1.5, 1.5, 8)))
        return r"frame01.nii.gz: constant image \(every voxel is 5\)"

    def two_d(root):
        save(root / f"training/{case}/{case}_frame01.nii.gz",
             np.random.default_rng(0).random((36, 40)).astype(np.float32), affine((1.5, 1.5, 8)))
        return r"frame01.nii.gz: expected a 3D volume .* got 2D shape \(36, 40\)"

    def info_no_ed(root):
        path = root / f"training/{case}/Info.cfg"
        path.write_text(path.read_text().replace("ED: 1\n", ""))
        return "Info.cfg: no 'ED:' line"

    return [missing_mask, shape_mismatch, bad_labels, truncated, not_gzip, nan, constant, two_d,
            info_no_ed]


@pytest.mark.parametrize("damage", _break_acdc("patient001"), ids=lambda f: f.__name__)
def test_bad_acdc_case_is_one_line_naming_the_file(damage, tmp_path, capsys):
    root = write_acdc(tmp_path / "acdc", n_cases=5)
    expected = damage(root)
    args = ["data", "check", "--kind", "acdc", "--root", str(root), "--clients", "2",
            "--set", "data.folds=2", "--set", "data.image_size=32", "--set", "data.partitions=2",
            "--set", f"data.cache_dir={tmp_path / 'c'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "patient001" in err
    import re
    assert re.search(expected, err), err
    # The same dataset with skip_bad_cases: a warning listing the case, and the rest loads.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args + ["--set", "data.skip_bad_cases=true"]) == 0
    out = capsys.readouterr().out
    listed = [str(w.message) for w in caught] + [out]
    assert any("patient001" in m and ("skip" in m) for m in listed)


def test_unknown_crop_rule_is_one_line_naming_the_key(tmp_path, capsys):
    assert main(["data", "check", "--kind", "acdc", "--root", str(tmp_path),
                 "--set", "data.crop=heart"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'data.crop'" in err and "'intensity', 'centre', 'label'" in err


def test_mnms_csv_missing_a_case(tmp_path):
    root = write_mnms(tmp_path / "mnms", vendors=("A", "A", "B", "B"))
    import csv
    rows = list(csv.DictReader(open(root / "mnms_info.csv")))
    write_mnms_csv(root / "mnms_info.csv", rows[1:])
    cfg = cfg_for("mnms", root, tmp_path)
    with pytest.raises(DataError, match=rf"mnms_info.csv: no row for case '{rows[0]['External code']}'"):
        load_client_volumes(cfg, 0)


def test_mnms_3d_file_where_4d_expected(tmp_path):
    root = write_mnms(tmp_path / "mnms", vendors=("A", "A", "B", "B"))
    path = next(root.rglob("*_sa.nii.gz"))
    img = nib.load(str(path))
    save(path, np.asarray(img.dataobj)[..., 0], img.affine)
    cfg = cfg_for("mnms", root, tmp_path, "data.split=by_site")
    with pytest.raises(DataError, match=r"_sa.nii.gz: expected a 4D cine"):
        for client in range(2):
            load_client_volumes(cfg, client)


def test_too_few_cases_or_slices_for_the_config(tmp_path):
    root = write_acdc(tmp_path / "acdc", n_cases=3)
    with pytest.raises(DataError, match="client 1 has 1 cases, fewer than data.folds=2"):
        load_client_volumes(cfg_for("acdc", root, tmp_path), 1)
    with pytest.raises(DataError, match="fewer than data.partitions=9"):
        load_client_volumes(cfg_for("acdc", root, tmp_path, "data.clients=1",
                                    "data.partitions=9"), 0)
    with pytest.raises(Exception, match="data.root"):
        load_config(None, ["data.kind=acdc"])


def test_patient_split_matches_kfold_split_with_one_volume_per_case():
    from fcl_ray.data.split import kfold_split
    ids = [f"case{i}" for i in range(9)]
    for fold in range(3):
        for n in (1, 3):
            assert patient_split(ids, [True] * 9, 3, fold, n, 5, 2) == kfold_split(9, 3, fold, n, 5, 2)
