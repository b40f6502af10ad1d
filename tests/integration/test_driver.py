"""A tiny real federation through Ray: results file, MLflow run, both fine-tuning modes."""
import pandas as pd
import pytest

from fcl_ray.config import load_config
from fcl_ray.federation.driver import run_experiment
from fcl_ray.report import RESULT_COLUMNS

pytestmark = pytest.mark.integration


def test_tiny_federation_end_to_end(ray_session, tiny_overrides, tmp_path):
    import mlflow

    cfg = load_config(None, tiny_overrides + ["finetune.modes=[local,federated]",
                                              "experiment.name=tiny-e2e",
                                              "pretrain.probe_every=2", "pretrain.probe_steps=2",
                                              "finetune.upper_bound=true"])
    lines: list[str] = []
    reports: list[dict] = []
    results = run_experiment(cfg, log=lines.append, reporter=reports.append)

    # The reporter saw every round (with the probe at round 2) and every setting.
    rounds = [r for r in reports if r["phase"] == "pretrain"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert "probe_dice" not in rounds[0] and 0 <= rounds[1]["probe_dice"] <= 1
    assert len([r for r in reports if r["phase"] == "finetune"]) == 3 * 2  # (fcl, random, ub) x modes

    # One row per (method, mode, N, fold, client), Dice in [0, 1].
    written = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(written.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(written) == len(results) == 3 * 2 * 2          # methods x modes x clients
    assert set(written["method"]) == {"fcl", "random", "upper_bound"}
    assert set(written.loc[written.method == "upper_bound", "n_labeled"]) == {2}  # all 2 train cases
    assert set(written["finetune_mode"]) == {"local", "federated"}
    assert written["dice_mean"].between(0, 1).all()
    assert (tmp_path / "out" / "config.yaml").is_file()
    # Progress was shown: round, client, loss, seconds; an ETA per round; where the results are.
    assert any("round 2/2 client 1 loss" in line for line in lines)
    assert any("round 1/2 done" in line and "; ETA 0:" in line for line in lines)
    assert any(line.endswith("results.csv") for line in lines[-6:])

    # The MLflow run holds the params, per-round metrics and the artifacts.
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=["tiny-e2e"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["pretrain.rounds"] == "2"
    assert "dice_mean/fcl/local/N1" in run.data.metrics
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "fcl/loss")
    assert [m.step for m in history] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.csv", "config.yaml"} <= artifacts
