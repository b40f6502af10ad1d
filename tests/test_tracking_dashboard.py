"""MLflow as the results dashboard: run links, names, tags, report artifacts, per-client
metrics, datasets, and encoders logged, registered and fine-tuned from (real SQLite store)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from fcl_ray.cli import main
from fcl_ray.config import ConfigError, load_config
from fcl_ray.dashboard import client_dice_metrics, dataset_record
from fcl_ray.encoders import encoder_label
from mlflow_server import mlflow_server  # noqa: F401  (fixture)
from fcl_ray.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, method_rows, run_link,
                              run_name)


def errors(capsys) -> list[str]:
    """The CLI's error lines on stderr (MLflow's own INFO logging may come before them)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcl-ray:")]


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
def test_run_publishes_results_and_fine_tunes_from_registered_encoder(
        ray_session, tiny_overrides, tmp_path, capsys):
    from mlflow import MlflowClient

    from fcl_ray.federation.driver import run_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = tiny_overrides + ["pretrain.methods=[fcl,random]", "finetune.modes=[local]",
                               "experiment.name=dash"]
    lines: list[str] = []
    first = run_experiment(load_config(None, common + ["tracking.register_as=dash-enc"]),
                           log=lines.append)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dash")
    assert exp.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    (run,) = client.search_runs([exp.experiment_id])
    run_id = run.info.run_id
    assert lines[-2].endswith(f"/#/experiments/{exp.experiment_id}/runs/{run_id}")
    assert re.fullmatch(r"dash-fcl\+random-\d{8}-\d{6}", run.info.run_name)
    tags = run.data.tags
    assert {k: tags[k] for k in ("methods", "finetune_modes", "folds", "sites", "dataset")} == \
        {"methods": "fcl,random", "finetune_modes": "local", "folds": "0", "sites": "2",
         "dataset": "synthetic"}
    assert tags["fcl_ray_version"]

    # Tables and plots are artifacts; per-client Dice are metrics (mean over folds).
    report = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/table_local.md", "report/table_local.csv", "report/dice_vs_n.png",
            "report/dice_per_client.png"} <= report
    local = client.download_artifacts(run_id, "report/table_local.md", str(tmp_path))
    assert "| fcl |" in open(local).read()
    for c in (0, 1):
        want = first[(first.method == "fcl") & (first.client == c)]["dice_mean"].mean()
        assert run.data.metrics[f"dice/fcl/local/N1/client{c}"] == pytest.approx(want)

    # The input data is on the run.
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == "synthetic-seed0"
    assert data_input.dataset.digest == dataset_record(load_config(None, common))["digest"]

    # The FCL encoder is a registered model version, tagged with where it came from.
    version = client.get_model_version("dash-enc-fcl", "1")
    assert version.tags["source_run"] == run_id and version.tags["method"] == "fcl"

    # Fine-tune from it: no pre-training, rows labelled with the model, and (same encoder,
    # same seeds) the Dice of the first run's FCL rows.
    again = ["finetune.encoder=models:/dash-enc-fcl/1", f"experiment.output_dir={tmp_path / 'o2'}"]
    second = run_experiment(load_config(None, common + again), log=lines.append)
    assert set(second["method"]) == {"dash-enc-fcl-v1", "random"}
    np.testing.assert_allclose(second[second.method == "dash-enc-fcl-v1"]["dice_mean"],
                               first[first.method == "fcl"]["dice_mean"], atol=1e-4)
    newest = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]
    assert newest.data.tags["finetune_encoder"] == "models:/dash-enc-fcl/1"
    assert not any(k.startswith("fcl/") for k in newest.data.metrics)   # no pre-training
    assert len(client.search_model_versions("name='dash-enc-fcl'")) == 1   # no new version

    # A model that does not fit model.features: one line naming the URI, exit 2.
    code = main(["run", "experiments/quickstart.yaml", "--set", f"tracking.uri={uri}",
                 "--set", "finetune.encoder=models:/dash-enc-fcl/1"])
    (err,) = errors(capsys)
    assert code == 2
    assert "'models:/dash-enc-fcl/1': does not fit model.features=[16, 32" in err


def test_missing_registered_model_is_one_line(tmp_path, capsys):
    code = main(["run", "experiments/quickstart.yaml",
                 "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 "--set", "finetune.encoder=models:/no-such-encoder/1"])
    (err,) = errors(capsys)
    assert code == 2
    assert "finetune.encoder 'models:/no-such-encoder/1': cannot load it" in err
    assert "no-such-encoder" in err.split("cannot load it", 1)[1]


def test_tracking_off_never_imports_mlflow(tmp_path):
    """publish_run with tracking off is a no-op and does not import MLflow (fresh process)."""
    import subprocess
    import sys

    code = ("import sys, pandas as pd\n"
            "from fcl_ray.config import load_config\n"
            "from fcl_ray.dashboard import publish_run\n"
            "from fcl_ray.tracking import make_tracker\n"
            "cfg = load_config(None, ['tracking.enabled=false'])\n"
            "assert publish_run(cfg, make_tracker(cfg), pd.DataFrame(), '.') is None\n"
            "assert 'mlflow' not in sys.modules, 'mlflow imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                   env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1]),
                        "PATH": "/usr/bin:/bin"})


def test_encoder_registered_on_a_real_server_loads_back(mlflow_server, tmp_path):
    """Through `mlflow server` (cluster/mlflow-server.sh): log + register an encoder file the
    way a run leaves it, then load it as finetune.encoder does, by alias too."""
    import mlflow
    from mlflow import MlflowClient

    from fcl_ray.encoders import load_encoder, log_encoders
    from fcl_ray.methods.models import Encoder
    from fcl_ray.tracking import make_tracker

    uri = mlflow_server["uri"]
    features = "model.features=[8,8,16,16,16,8]"
    cfg = load_config(None, [features, "data.image_size=32", f"tracking.uri={uri}",
                             "tracking.experiment=server-encoders", "pretrain.methods=[fcl]",
                             f"experiment.output_dir={tmp_path}", "tracking.register_as=srv"])
    torch.manual_seed(1)
    trained = Encoder(cfg.model.features).state_dict()
    (tmp_path / "encoders").mkdir()
    torch.save(trained, tmp_path / "encoders" / "fcl-fold0.pt")
    torch.save(trained, tmp_path / "encoders" / "fedca-fold0.pt")   # not this run's: skipped
    tracker = make_tracker(cfg)
    (entry,) = log_encoders(cfg, tmp_path, tracker.run_id, log=lambda line: None)
    tracker.end()
    assert entry["registered_model"] == "srv-fcl"
    MlflowClient(uri).set_registered_model_alias("srv-fcl", "best", entry["version"])
    for source in (f"models:/srv-fcl/{entry['version']}", "models:/srv-fcl@best",
                   f"runs:/{tracker.run_id}/encoder-fcl-fold0"):
        given = load_encoder(load_config(None, [features, f"tracking.uri={uri}",
                                                f"finetune.encoder={source}"]))
        assert set(given.state) == set(trained)
        for key, value in trained.items():
            np.testing.assert_array_equal(given.state[key], value.numpy())
    assert given.label == "pretrained"
    assert mlflow.models.get_model_info("models:/srv-fcl@best").metadata["features"] == \
        [8, 8, 16, 16, 16, 8]


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
