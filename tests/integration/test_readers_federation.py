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


@pytest.mark.parametrize("kind,write,extra", [
    ("acdc", write_acdc, []),
    ("acdc", partial(write_acdc, groups=("NOR", "DCM")), ["data.split=by_group"]),  # group sites
    ("mnms", write_mnms, ["data.split=by_site", "data.sites_by=centre", "data.clients=3"]),
    ("decathlon", write_decathlon, ["data.classes=[left atrium]"]),
])
def test_run_completes_on_each_real_layout(kind, write, extra, ray_session, tiny_overrides,
                                           tmp_path):
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


def test_run_with_a_bad_file_exits_2_before_ray(tmp_path, tiny_overrides, capsys):
    root = write_acdc(tmp_path / "acdc")
    (root / "training/patient002/patient002_frame03_gt.nii.gz").unlink()
    args = ["run", CONFIG]
    for s in tiny_overrides + [f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}",
                               "data.phases=es"]:
        args += ["--set", s]
    assert main(args) == 2
    assert "patient002_frame03_gt.nii.gz: missing file" in capsys.readouterr().err
