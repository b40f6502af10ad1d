"""MLflow as the results dashboard, without a federation: run links, encoder labels, bad
encoder settings, per-client metrics, dataset digests, tracking off."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.dashboard import client_dice_metrics, dataset_record
from fcl_ray.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, encoder_label,
                              method_rows, run_link, run_name)


# ----------------------------------------------------------------------------- pure parts
def test_run_link_for_server_and_local_store():
    assert run_link("http://user:pw@host:5000/", "3", "abc") == [
        "MLflow run: http://***@host:5000/#/experiments/3/runs/abc",
        "MLflow runs table: http://***@host:5000/#/experiments/3?workflowType=machine_learning"]
    local = run_link("sqlite:////data/my runs/mlflow.db", "1", "r1")
    assert local[1].strip() == "mlflow ui --backend-store-uri 'sqlite:////data/my runs/mlflow.db'"
    assert local[2].endswith("http://127.0.0.1:5000/#/experiments/1/runs/r1")


def test_encoder_labels_and_method_rows():
    assert encoder_label("models:/cardiac-fcl/3") == "cardiac-fcl-v3"
    assert encoder_label("models:/cardiac-fcl@best") == "cardiac-fcl-best"
    assert encoder_label("runs:/0a1b/encoder-fcl-fold0") == "pretrained"
    cfg = load_config(None, ["pretrain.methods=[fcl,random,fedca]",
                             "finetune.encoder=models:/enc/2"])
    assert method_rows(cfg) == ["enc-v2", "random"]       # pre-training methods replaced
    assert re.fullmatch(r"quickstart-enc-v2\+random-\d{8}-\d{6}", run_name(cfg))


@pytest.mark.parametrize("override, key", [
    ("finetune.encoder=encoder.pt", "finetune.encoder"),
    ("finetune.encoder=models:/", "finetune.encoder"),
    ("tracking.register_as=my/model", "tracking.register_as"),
])
def test_bad_encoder_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        load_config(None, [override])
    with pytest.raises(ConfigError, match="needs tracking.enabled=true"):
        load_config(None, ["tracking.register_as=x", "tracking.enabled=false"])


def test_client_dice_metrics_average_folds():
    rows = pd.DataFrame({"method": "fcl", "finetune_mode": "local", "n_labeled": 1,
                         "fold": [0, 1, 0, 1], "client": [0, 0, 1, 1],
                         "dice_mean": [0.2, 0.4, 0.6, 0.6]})
    assert client_dice_metrics(rows) == pytest.approx({"dice/fcl/local/N1/client0": 0.3,
                                                       "dice/fcl/local/N1/client1": 0.6})


def test_dataset_digest_tells_data_apart(tmp_path):
    from nifti_factories import write_acdc

    a, b = (dataset_record(load_config(None, [f"experiment.seed={s}"])) for s in (0, 1))
    assert a["digest"] != b["digest"] and a["name"] == "synthetic-seed0"
    root = write_acdc(tmp_path / "acdc", n_cases=4)
    disk = ["data.kind=acdc", f"data.root={root}", "data.clients=2", "data.folds=2"]
    first = dataset_record(load_config(None, disk))
    assert first["source"] == str(root.resolve())
    assert sorted(r["case_id"] for r in first["rows"]) == [f"patient00{i}" for i in range(1, 5)]
    assert dataset_record(load_config(None, disk))["digest"] == first["digest"]   # stable
    image = next(root.rglob("*_frame01.nii.gz"))
    image.write_bytes(image.read_bytes() + b"\0")          # one file changes size
    assert dataset_record(load_config(None, disk))["digest"] != first["digest"]


# ----------------------------------------------------------------------------- end to end


def test_tracking_off_never_imports_mlflow(tmp_path):
    """publish_run with tracking off is a no-op and does not import MLflow (fresh process)."""
    import subprocess
    import sys

    code = ("import sys, pandas as pd\n"
            "from fcl_ray.config_io import load_config\n"
            "from fcl_ray.dashboard import publish_run\n"
            "from fcl_ray.tracking import make_tracker\n"
            "cfg = load_config(None, ['tracking.enabled=false'])\n"
            "assert publish_run(cfg, make_tracker(cfg), pd.DataFrame(), '.') is None\n"
            "assert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[2]),
                        "PATH": "/usr/bin:/bin"})


def test_sweep_prints_its_parent_run_link(tmp_path):
    """The parent run of a sweep: model-training experiment, and its UI link in the summary."""
    from mlflow import MlflowClient

    from fcl_ray.tracking import start_parent_run
    from fcl_ray.sweep.run import SweepOutcome, format_outcome
    from fcl_ray.sweep.spec import parse_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = start_parent_run(uri, "sweeps", "s1", {"sweep.num_samples": 1}, {"kind": "sweep"})
    exp = MlflowClient(uri).get_experiment_by_name("sweeps")
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    spec = parse_sweep({"name": "s1", "overrides": ["pretrain.probe_every=1"],
                        "search_space": {"pretrain.lr": {"choice": [0.1]}}})
    outcome = SweepOutcome(pd.DataFrame({"trial_id": ["a"], "status": ["OK"]}), None, 1.0, 1,
                           parent, uri, tmp_path, 0)
    text = format_outcome(spec, outcome)
    assert f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs/{parent}" in text
    assert f"mlflow ui --backend-store-uri {uri}" in text
