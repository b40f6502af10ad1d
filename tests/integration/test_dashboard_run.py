"""A run publishes its results to MLflow and a later run fine-tunes from the registered
encoder (SQLite store, then a real `mlflow server`)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fcl_ray.cli import main
from fcl_ray.config_io import load_config
from fcl_ray.dashboard import dataset_record
from fcl_ray.tracking import (EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def errors(capsys) -> list[str]:
    """The CLI's error lines on stderr (MLflow's own INFO logging may come before them)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcl-ray:")]


# ----------------------------------------------------------------------------- pure parts


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
                 "--set", f"experiment.output_dir={tmp_path / 'o3'}",
                 "--set", "finetune.encoder=models:/dash-enc-fcl/1"])
    (err,) = errors(capsys)
    assert code == 2
    assert "'models:/dash-enc-fcl/1': does not fit model.features=[16, 32" in err


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


def test_missing_registered_model_is_one_line(tmp_path, capsys):
    code = main(["run", "experiments/quickstart.yaml",
                 "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 "--set", f"experiment.output_dir={tmp_path / 'out'}",
                 "--set", "finetune.encoder=models:/no-such-encoder/1"])
    (err,) = errors(capsys)
    assert code == 2
    assert "finetune.encoder 'models:/no-such-encoder/1': cannot load it" in err
    assert "no-such-encoder" in err.split("cannot load it", 1)[1]
