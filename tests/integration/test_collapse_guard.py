"""The collapse guard on a real federation that collapses on purpose (and one that does not)."""
import json
from pathlib import Path

import pytest

from fcl_ray.cli import main


def _run_args(overrides: list[str]) -> list[str]:
    quickstart = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
    return ["run", quickstart] + [arg for o in overrides for arg in ("--set", o)]


@pytest.mark.integration
def test_guard_stops_a_collapsing_run_and_health_is_logged_otherwise(ray_session, tiny_overrides,
                                                                    tmp_path, capsys):
    import mlflow

    # Collapses on purpose: the old head and loss (no BatchNorm, stale negatives only) at a
    # learning rate 50x the default.
    collapsing = ["pretrain.methods=[fcl]", "model.head_norm=none",
                  "pretrain.fresh_negatives=none", "pretrain.lr=0.05",
                  "pretrain.collapse_guard=stop", "experiment.name=collapse-guard"]
    code = main(_run_args(tiny_overrides + collapsing))
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcl-ray")]
    assert code == 1                                  # MLflow's own log lines aside: one line
    assert len(ours) == 1 and "collapsed at round 1" in ours[0] and "guard=stop" in ours[0]

    # The defaults stay healthy: no warning, health per client and mean in MLflow and rounds.jsonl.
    out_dir = tmp_path / "healthy"
    healthy = tiny_overrides + ["pretrain.methods=[fcl]", "experiment.name=healthy",
                                f"experiment.output_dir={out_dir}", "pretrain.collapse_guard=stop"]
    assert main(_run_args(healthy)) == 0
    assert "COLLAPSED" not in capsys.readouterr().err   # progress lines are on stderr
    rounds = [json.loads(line) for line in (out_dir / "rounds.jsonl").read_text().splitlines()]
    assert set(rounds[0]["health"]) == {"0", "1"}
    assert rounds[-1]["health"]["0"]["mean_cosine"] < 0.99
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["healthy"], output_format="list")[0]
    metrics = run.data.metrics
    assert {"fcl/health/mean_cosine", "fcl/health/effective_rank", "fcl/health/live_units",
            "fcl/health/partition_gap", "fcl/health/dim_std", "fcl/collapsed",
            "fcl/health/mean_cosine_client1"} <= set(metrics)
    assert metrics["fcl/collapsed"] == 0.0


@pytest.mark.integration
def test_health_every_k_rounds_and_at_the_last(ray_session, tiny_overrides, tmp_path):
    from fcl_ray.config_io import load_config
    from fcl_ray.federation.driver import run_experiment

    cfg = load_config(None, tiny_overrides + ["pretrain.methods=[fcl]", "pretrain.rounds=3",
                                              "pretrain.health_every=2", "finetune.modes=[local]",
                                              "tracking.enabled=false"])
    run_experiment(cfg, log=lambda line: None)
    rounds = [json.loads(line) for line in
              (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()]
    measured = [r["round"] for r in rounds if any(r["health"].values())]
    assert measured == [2, 3]
