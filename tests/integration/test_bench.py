"""The benchmark runs end to end on a tiny workload and reports sane figures (no timing
targets here: those are read from `fcl-ray bench`, not asserted in tests)."""
import pytest

from fcl_ray.federation.bench import MEASURED_ACTORS, run_bench, seconds_since_process_start

pytestmark = pytest.mark.integration


def test_bench_reports_every_figure(ray_session):
    table = run_bench([2], local_steps=1, rounds=1, log=lambda line: None,
                      overrides=["data.image_size=32", "model.features=[8,8,16,16,16,8]",
                                 "data.cases_per_client=4", "data.folds=2",
                                 "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
                                 "finetune.n_labeled=[1]"])
    row = table.iloc[0]
    assert row.clients == 2 and row.slots == 2
    for column in ("pretrain_round_s", "pretrain_reference_s", "finetune_round_s",
                   "finetune_reference_s", "time_to_first_round_s", "bytes_per_round_mb",
                   "peak_memory_mb_per_client", "memory_mb_per_client", "coordinator_peak_mb"):
        assert row[column] > 0, column
    # one actor per client here: a client's share is its own process's peak, or less
    assert row.memory_mb_per_client <= row.peak_memory_mb_per_client
    # the running coordinator, which holds every client's handle, never loaded torch/MONAI
    assert MEASURED_ACTORS[-1]["coordinator_heavy_modules"] == []
    assert 0 < row.exchange_aggregate_fraction < 1
    assert row.pretrain_overhead == pytest.approx(row.pretrain_round_s
                                                  / (row.pretrain_reference_s / row.slots))


def test_process_age_is_positive():
    assert 0 < seconds_since_process_start() < 24 * 3600
