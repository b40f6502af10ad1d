"""The benchmark runs end to end on a tiny workload and reports sane figures (no timing
targets here: those are read from `fcl-ray bench`, not asserted in tests)."""
import pytest

from fcl_ray.federation.bench import MEASURED_ACTORS, run_bench, seconds_since_process_start

pytestmark = pytest.mark.integration


TINY_WORKLOAD = ["data.image_size=32", "model.features=[8,8,16,16,16,8]",
                 "data.cases_per_client=4", "data.folds=2", "data.slices_min=4",
                 "data.slices_max=5", "data.partitions=2", "finetune.n_labeled=[1]"]


def test_bench_reports_every_figure(ray_session):
    table = run_bench([2], local_steps=1, rounds=1, log=lambda line: None,
                      overrides=TINY_WORKLOAD)
    row = table.iloc[0]
    assert row.clients == 2 and row.slots == 2
    for column in ("pretrain_round_s", "pretrain_reference_s", "pretrain_reference_parallel_s",
                   "finetune_round_s",
                   "finetune_reference_s", "time_to_first_round_s", "bytes_per_round_mb",
                   "peak_memory_mb_per_client", "memory_mb_per_client", "coordinator_peak_mb"):
        assert row[column] > 0, column
    # one actor per client here: a client's share is its own process's peak, or less
    assert row.memory_mb_per_client <= row.peak_memory_mb_per_client
    # the running coordinator, which holds every client's handle, never loaded torch/MONAI
    assert MEASURED_ACTORS[-1]["coordinator_heavy_modules"] == []
    assert 0 < row.exchange_aggregate_fraction < 1
    # health figures on (the default source) and counted apart; the reference loop has none
    assert row.health_source == "steps" and 0 < row.health_fraction < 1
    assert row.pretrain_overhead == pytest.approx(row.pretrain_round_s
                                                  / (row.pretrain_reference_s / row.slots))
    # the plain loop again in `slots` concurrent processes (one client each here)
    assert row.pretrain_reference_parallel_s > 0
    assert row.pretrain_overhead_parallel == pytest.approx(row.pretrain_round_s
                                                           / row.pretrain_reference_parallel_s)


def test_process_age_is_positive():
    assert 0 < seconds_since_process_start() < 24 * 3600


def test_scale_bench_splits_rounds_and_samples_clients(ray_session):
    from fcl_ray.federation.scale import run_scale

    rows = run_scale([4], client_actors=2, clients_per_round=2, local_steps=1, rounds=1,
                     log=lambda line: None, overrides=TINY_WORKLOAD)
    everyone, sampled = rows
    assert (everyone["clients_per_round"], sampled["clients_per_round"]) == (4, 2)
    assert everyone["client_actors"] == sampled["client_actors"] == 2
    assert everyone["participants"] == 4 and sampled["participants"] == 2
    for row in rows:
        parts = (row["compute_s"] + row["health_s"] + row["exchange_s"] + row["aggregation_s"]
                 + row["waiting_s"])
        assert row["compute_s"] > 0 and parts == pytest.approx(row["round_s"], rel=1e-6)
        assert row["received_mb_per_client"] > 0 and row["sent_mb_per_client"] > 0
        # two host processes hold the four clients: a client's share is below a host's peak
        assert 0 < row["memory_mb_per_client"] < min(row["host_peak_mb"])
