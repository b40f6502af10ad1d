"""MLflow against a real server: run layout, tags, parent/child runs, artifacts proxied."""
import os
import subprocess

from fcl_ray.config_io import load_config
from fcl_ray.tracking import (TrackingContext, absolute_uri, config_tags, make_tracker,
                              start_parent_run, finish_run)
from mlflow_server import SCRIPT


def test_absolute_uri_makes_sqlite_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_config_tags_for_filtering():
    cfg = load_config(None, ["pretrain.methods=[fcl]", "finetune.n_labeled=[1,2]",
                             "experiment.seed=3", "finetune.modes=[local,federated]"])
    assert config_tags(cfg) | {} == {"method": "fcl", "mode": "local,federated", "N": "1,2",
                                     "seed": "3", "clients": "3", "dataset": "synthetic"}


def test_parent_and_child_runs_on_a_real_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    uri = mlflow_server["uri"]
    assert uri.startswith("http://127.0.0.1:")
    parent = start_parent_run(uri, "server-test", "sweep-x", {"sweep.num_samples": 2},
                              tags={"kind": "sweep"})
    cfg = load_config(None, ["experiment.name=child-a", f"tracking.uri={uri}",
                             "tracking.experiment=server-test", "pretrain.methods=[fcl]"])
    context = TrackingContext(parent_run_id=parent, tags={"trial_id": "t1"})
    tracker = make_tracker(cfg, tags={"extra": 1}, context=context)
    for step in range(2):
        tracker.log_metrics({"fcl/loss": 1.0 / (step + 1)}, step=step)
    tracker.end("KILLED")
    assert context.run_id == tracker.run_id   # the caller learns the run's id
    # The same context again (a resumed trial) continues that run: RUNNING again, its params
    # kept even where the config moved (a resumed trial's new working directory).
    moved = load_config(None, ["experiment.name=child-a", f"tracking.uri={uri}",
                               "tracking.experiment=server-test", "pretrain.methods=[fcl]",
                               f"experiment.output_dir={tmp_path}/elsewhere"])
    again = make_tracker(moved, context=context)
    assert again.run_id == tracker.run_id
    assert MlflowClient(uri).get_run(tracker.run_id).info.status == "RUNNING"
    tracker = again
    tracker.log_metrics({"fcl/loss": 1.0 / 3}, step=2)
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    tracker.log_artifact(tmp_path / "results.csv")
    tracker.end()
    finish_run(uri, parent, metrics={"best_probe_dice": 0.5})

    client = MlflowClient(uri)
    child = client.get_run(tracker.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert {k: child.data.tags[k] for k in ("method", "mode", "N", "seed", "trial_id")} == \
        {"method": "fcl", "mode": "local", "N": "1", "seed": "0", "trial_id": "t1"}
    assert child.data.params["pretrain.temperature"] == "0.1"
    assert child.data.params["experiment.output_dir"] == "runs/quickstart"
    assert child.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "fcl/loss")] == [0, 1, 2]
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["results.csv"]
    # The server proxies artifacts into its own store (not the client's file system).
    # (the server is shared by the session's tests, so look under this run's id only)
    stored = list((mlflow_server["dir"] / "artifacts").rglob(f"{tracker.run_id}/artifacts/results.csv"))
    assert len(stored) == 1
    assert client.get_run(parent).info.status == "FINISHED"
    # Without a context, runs are top-level.
    plain = make_tracker(cfg)
    plain.end()
    assert "mlflow.parentRunId" not in client.get_run(plain.run_id).data.tags


def test_server_script_usage_and_status(tmp_path):
    env = os.environ | {"MLFLOW_DIR": str(tmp_path), "MLFLOW_PORT": "1"}
    bad = subprocess.run(["bash", str(SCRIPT), "bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    status = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True,
                            text=True)
    assert status.returncode == 1 and "not running" in status.stdout
