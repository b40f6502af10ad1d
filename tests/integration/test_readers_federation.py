"""`fcl-ray run` completes a short federation on each real layout (tiny datasets on disk)."""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from nifti_factories import write_acdc, write_decathlon, write_mnms  # noqa: E402

from fcl_ray.cli import main  # noqa: E402

pytestmark = pytest.mark.integration
CONFIG = str(Path(__file__).parents[2] / "experiments" / "acdc_quick.yaml")


CARDIAC = ["dice_mean", "dice_rv", "dice_myo", "dice_lv"]


@pytest.mark.parametrize("kind,write,extra,dice", [
    ("acdc", write_acdc, [], CARDIAC),
    ("acdc", partial(write_acdc, groups=("NOR", "DCM")), ["data.split=by_group"], CARDIAC),
    ("mnms", write_mnms, ["data.split=by_site", "data.sites_by=centre", "data.clients=3"],
     CARDIAC),
    # The label set follows the data: one class (picked by data.classes) and two (all of
    # dataset.json's), in the U-Net's outputs, the results columns and the report's table.
    ("decathlon", partial(write_decathlon, labels=("left atrium", "wall")),
     ["data.classes=[left atrium]"], ["dice_mean", "dice_left_atrium"]),
    ("decathlon", partial(write_decathlon, labels=("left atrium", "wall")), [],
     ["dice_mean", "dice_left_atrium", "dice_wall"]),
])
def test_run_completes_on_each_real_layout(kind, write, extra, dice, ray_session,
                                           tiny_overrides, tmp_path, capsys):
    root = write(tmp_path / kind)
    sets = tiny_overrides + [f"data.kind={kind}", f"data.root={root}", "data.spacing=1.5",
                             f"data.cache_dir={tmp_path / 'cache'}", "pretrain.methods=[fcl]",
                             "tracking.enabled=false", *extra]
    args = ["run", CONFIG]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    clients = 3 if kind == "mnms" else 2
    assert sorted(results["client"].unique()) == list(range(clients))
    assert results["dice_mean"].between(0, 1).all()
    assert any((tmp_path / "cache").glob("*.npz"))     # preprocessed once, by the pre-flight
    assert [c for c in results.columns if c.startswith("dice_")] == dice
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out" / "results.csv")]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines()
                  if line.startswith("| method"))
    if kind == "decathlon":   # --metric dice_<class> tabulates any class of the data
        assert main(["report", str(tmp_path / "out"), "--metric", dice[-1]]) == 0
        assert f"({dice[-1]}, mean" in capsys.readouterr().out
    assert "N=1" in header


def test_run_with_a_bad_file_exits_2_before_ray(tmp_path, tiny_overrides, capsys):
    root = write_acdc(tmp_path / "acdc")
    (root / "training/patient002/patient002_frame03_gt.nii.gz").unlink()
    args = ["run", CONFIG]
    for s in tiny_overrides + [f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}",
                               "data.phases=es"]:
        args += ["--set", s]
    assert main(args) == 2
    assert "patient002_frame03_gt.nii.gz: missing file" in capsys.readouterr().err


def test_data_classes_naming_no_label_exits_2_in_one_line(tmp_path, tiny_overrides, capsys):
    root = write_decathlon(tmp_path / "dec")
    args = ["run", CONFIG]
    for s in tiny_overrides + ["data.kind=decathlon", f"data.root={root}",
                               "data.classes=[aorta]", f"data.cache_dir={tmp_path / 'c'}"]:
        args += ["--set", s]
    assert main(args) == 2            # before Ray: the pre-flight reads dataset.json
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.classes names 'aorta', not a foreground label " \
        "(1=left atrium)" in err[0]
