"""A short chaos drill (the same code as benchmarks/chaos.py): a separate driver process on
the session's Ray cluster, one client SIGKILLed, one client frozen past the round deadline,
the driver SIGKILLed and resumed; the run must still finish with every round, every results
row and one FINISHED MLflow run."""
from pathlib import Path

import pytest
import ray

from fcl_ray.chaos import KILL_CLIENT, KILL_DRIVER, STRAGGLE, ChaosEvent
from fcl_ray.chaos_drill import ChaosMonkey, run_figures

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ROUNDS, TIMEOUT_S = 6, 6.0


def test_a_drill_of_kills_a_straggler_and_a_driver_resume(ray_session, tiny_overrides, tmp_path):
    out = tmp_path / "out"
    overrides = tiny_overrides + [
        f"pretrain.rounds={ROUNDS}", "pretrain.methods=[fcl]", "finetune.modes=[local]",
        f"federation.round_timeout_s={TIMEOUT_S}", "federation.max_restarts=10",
        # Rounds of ~1.5 s, so a kill 0.3 s into a round lands while the clients work.
        "faults.delay_seconds={0: 1.5, 1: 1.5}"]
    # Fixed events (the seeded schedule has its own unit tests): a kill, the driver, a freeze.
    schedule = [ChaosEvent(2, KILL_CLIENT, 0), ChaosEvent(3, KILL_DRIVER, -1),
                ChaosEvent(5, STRAGGLE, 1)]
    monkey = ChaosMonkey(str(ROOT / "experiments" / "quickstart.yaml"), overrides, out,
                         schedule, ray.get_runtime_context().gcs_address,
                         straggle_s=TIMEOUT_S + 2, timeout_s=400, log=lambda line: None)
    record = monkey.run()
    figures = run_figures(record, ROUNDS, 2, f"sqlite:///{tmp_path / 'mlflow.db'}", "quickstart")

    assert [e["done"] for e in figures["events"]] == [True, True, True], figures["events"]
    assert [d["ended_by"] for d in figures["drivers"]] == ["chaos SIGKILL", "itself"]
    assert figures["rounds_completed"] == ROUNDS and figures["rounds_recorded_twice"] == 0
    dropped = figures["dropped_per_round"]
    assert "died" in dropped.get("2", {}).values(), dropped      # the SIGKILL, mid-round
    assert any(why.startswith("late") for why in dropped.get("5", {}).values()), dropped
    assert figures["results_rows"] == 2 and len(figures["dice"]) == 2
    # One MLflow run, continued by the resumed driver and FINISHED, with every round's metrics.
    (run,) = figures["mlflow"]
    assert run["status"] == "FINISHED" and run["resumed"] == "True"
    assert run["steps"]["fcl/loss"] == list(range(ROUNDS))
    assert "dice_mean/fcl/local/N1" in run["metric_keys"]


def test_a_straggler_in_a_retried_attempt_stays_in_the_record(ray_session, tiny_overrides,
                                                              tmp_path):
    # min_clients=2: the frozen client's late answer leaves attempt 1 short, the round is
    # retried and the thawed client answers the retry. rounds.jsonl must still say who was
    # late in attempt 1 (it used to keep the last attempt's drops only).
    timeout = 4.0
    overrides = tiny_overrides + ["pretrain.rounds=3", "pretrain.methods=[fcl]",
                                  "finetune.modes=[local]", "tracking.enabled=false",
                                  "federation.min_clients=2",
                                  f"federation.round_timeout_s={timeout}",
                                  "faults.delay_seconds={0: 1.0, 1: 1.0}"]
    monkey = ChaosMonkey(str(ROOT / "experiments" / "quickstart.yaml"), overrides,
                         tmp_path / "out", [ChaosEvent(2, STRAGGLE, 0)],
                         ray.get_runtime_context().gcs_address, straggle_s=timeout + 2,
                         timeout_s=300, log=lambda line: None)
    figures = run_figures(monkey.run(), 3, 2, None, "quickstart")
    assert figures["rounds_completed"] == 3
    (retried,) = figures["dropped_retried_per_round"]["2"]
    assert list(retried.values())[0].startswith("late"), figures
    assert figures["drops"] == {"late": 1}
