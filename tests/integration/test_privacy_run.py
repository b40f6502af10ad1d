"""privacy.* on a real federation: epsilon per site per round in rounds.jsonl, MLflow and
privacy.json, and privacy.max_epsilon stopping pre-training before the round that would
exceed it while the run goes on to fine-tune."""
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from fcl_ray.cli import main
from fcl_ray.config_io import load_config


@pytest.mark.integration
def test_budget_stops_pretraining_and_epsilon_is_recorded(ray_session, tiny_overrides, tmp_path,
                                                          capsys):
    import mlflow

    from fcl_ray.privacy.accountant import RoundRelease, epsilon

    quickstart = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
    # Tiny pools: 2 training patients x 4-5 slices a site, 8 of them shared a round. At
    # multiplier 1 two rounds spend ~7.1-7.4 and three ~9.2-9.6: a budget of 8 stops before
    # round 3 of 3.
    overrides = tiny_overrides + ["pretrain.methods=[fcl]", "pretrain.rounds=3",
                                  "finetune.modes=[local]", "experiment.name=privacy",
                                  "privacy.feature_noise_multiplier=1.0",
                                  "privacy.max_epsilon=8"]
    assert main(["run", quickstart] + [a for o in overrides for a in ("--set", o)]) == 0
    printed = capsys.readouterr()
    assert "stopped before round 3 of 3" in printed.err
    assert "Privacy of the feature exchange" in printed.out   # under the Dice table
    assert "fcl/fold0: epsilon per site" in printed.out
    out = tmp_path / "out"
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    summary = json.loads((out / "privacy.json").read_text())["fcl/fold0"]
    assert summary["rounds"] == 2 and summary["stopped"].startswith("stopped before round 3")
    for client, site in summary["clients"].items():
        release = RoundRelease(site["population"], site["sampled"], 1.0)
        per_round = [r["privacy"]["epsilon"][client] for r in rounds]
        assert per_round == pytest.approx([epsilon({release: n}, 1e-5) for n in (1, 2)])
        assert site["epsilon"] == pytest.approx(per_round[-1]) and per_round[-1] <= 8
    assert len(pd.read_csv(out / "results.csv")) == 2   # fine-tuning ran on the encoder
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["privacy"], output_format="list")[0]
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id,
                                                       "fcl/privacy/epsilon_client1")
    assert [m.value for m in history] == pytest.approx(
        [r["privacy"]["epsilon"]["1"] for r in rounds])
    # experiments/privacy_epsilon_plan.py, which says before a run what it will spend, builds
    # the same pools and releases as this run (its epsilons follow from the accountant above).
    plan = _plan_script()
    threads = torch.get_num_threads()
    try:
        planned = plan.site_releases(load_config(quickstart, overrides), fold=0)
    finally:
        torch.set_num_threads(threads)   # a ClientSite sets this process's threads
    assert [(r.population, r.sampled) for r in planned] == [
        (site["population"], site["sampled"]) for _, site in sorted(summary["clients"].items())]


def _plan_script():
    path = Path(__file__).resolve().parents[2] / "experiments" / "privacy_epsilon_plan.py"
    spec = importlib.util.spec_from_file_location("privacy_epsilon_plan", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
