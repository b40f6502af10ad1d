"""A tiny real federation through Ray: results file, MLflow run, both fine-tuning modes."""
import re

import pandas as pd
import pytest

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import run_experiment
from fcl_ray.results import RESULT_COLUMNS

pytestmark = pytest.mark.integration


def test_tiny_federation_end_to_end(ray_session, tiny_overrides, tmp_path):
    import mlflow

    cfg = load_config(None, tiny_overrides + ["finetune.modes=[local,federated]",
                                              "experiment.name=tiny-e2e",
                                              "pretrain.probe_every=2", "pretrain.probe_steps=2",
                                              "finetune.upper_bound=true"])
    lines: list[str] = []
    reports: list = []
    results = run_experiment(cfg, log=lines.append, reporter=reports.append)

    # The reporter saw every round (with the probe at round 2) and every setting.
    rounds = [r for r in reports if r.phase == "pretrain"]
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[0].probe_dice is None and 0 <= rounds[1].probe_dice <= 1
    assert len([r for r in reports if r.phase == "finetune"]) == 3 * 2  # (fcl, random, ub) x modes

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
    # Fine-tuning progress: a line per setting as it finishes, with the settings done / total
    # of its phase (the fold's 3 local settings; each method's 1 federated) and an ETA.
    done = {mode: [m.groups() for m in (re.search(
        rf"{mode} fine-tuning, .*; setting (\d+)/(\d+) done, ETA \d+:\d\d:\d\d$", line)
        for line in lines) if m] for mode in ("local", "federated")}
    assert sorted(done["local"]) == [("1", "3"), ("2", "3"), ("3", "3")]
    assert done["federated"] == [("1", "1")] * 3

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


def test_converged_fine_tuning_records_steps_and_validation(ray_session, tiny_overrides, tmp_path):
    """budget=converge in both modes: every row says how long it trained and how well it
    validated; the upper bound leaves the validation patient unlabeled; the federated rows of
    one setting share the global model's step and validation Dice."""
    cfg = load_config(None, tiny_overrides + [
        "finetune.modes=[local,federated]", "pretrain.methods=[fcl]", "finetune.upper_bound=true",
        "finetune.budget=converge", "finetune.eval_every=2", "finetune.patience=2",
        "finetune.max_steps=8", "finetune.local_steps=2", "tracking.enabled=false",
        "pretrain.probe_every=2"])
    lines: list[str] = []
    reports: list = []
    results = run_experiment(cfg, log=lines.append, reporter=reports.append)
    # the probe (the tuning score) is a converged fine-tune scored on the validation patients
    probes = [r.probe_dice for r in reports if getattr(r, "probe_dice", None) is not None]
    assert len(probes) == 1 and 0 <= probes[0] <= 1
    assert len(results) == 2 * 2 * 2                        # (fcl, ub) x modes x clients
    assert results["steps"].between(4, 8).all()            # patience 2 x every 2 steps, at most 8
    assert (results["best_step"] <= results["steps"]).all() and (results["best_step"] >= 2).all()
    assert results["val_dice"].between(0, 1).all()
    # 2 training patients per client, one of them validating: the upper bound labels 1.
    assert set(results.loc[results.method == "upper_bound", "n_labeled"]) == {1}
    federated = results[results.finetune_mode == "federated"]
    assert (federated.groupby("method")[["steps", "val_dice"]].nunique() == 1).all().all()
    assert any("mean Dice" in line and "steps (mean over clients)" in line for line in lines)
    # local settings of every method of the fold ran as one queue
    assert any(line.startswith("local fine-tuning of fold 0 (2 setting(s)") for line in lines)
