"""The scale bench's round split (fcl_ray.federation.scale): pure bookkeeping, no Ray."""
import pytest

from fcl_ray.core.events import RoundReport
from fcl_ray.federation.scale import critical_path, scale_summary


def test_the_busiest_host_sets_the_split():
    stats = RoundReport(round=1, sampled=[0, 1, 2], participants=[0, 1, 2], dropped={},
                        retries=0, dropped_retried=[], aggregate_seconds=0.5, round_seconds=10.0,
                        clients=[
        {"client": 0, "compute_seconds": 2.0, "health_seconds": 0.2, "exchange_seconds": 0.5},
        {"client": 1, "compute_seconds": 3.0, "health_seconds": 0.3, "exchange_seconds": 0.5},
        {"client": 2, "compute_seconds": 4.0, "health_seconds": 0.5, "exchange_seconds": 1.0}])
    # host A: 6.5 s of calls, host B: 5.5 s; A is the critical path
    split = critical_path(stats, {0: "A", 1: "A", 2: "B"})
    assert split == pytest.approx({"compute_s": 5.0, "health_s": 0.5, "exchange_s": 1.0,
                                   "aggregation_s": 0.5, "waiting_s": 3.0,
                                   "busiest_host_clients": 2})


def test_summary_ratios_use_the_smallest_and_largest_client_counts():
    rows = [{"clients": 16, "clients_per_round": 16, "round_s": 2.0},
            {"clients": 64, "clients_per_round": 64, "round_s": 8.0},
            {"clients": 64, "clients_per_round": 16, "round_s": 2.2}]
    summary = scale_summary(rows, clients_per_round=16)
    # C=16 with 16 per round is all clients: the first point of both curves
    assert summary["sampled_clients"] == [16, 64] and summary["all_clients_clients"] == [16, 64]
    assert summary["sampled_round_ratio"] == pytest.approx(1.1)
    assert summary["all_clients_round_ratio"] == pytest.approx(4.0)
    assert summary["all_clients_clients_ratio"] == 4.0


def test_scale_plot_and_table_are_written(tmp_path):
    from fcl_ray.federation.scale import TABLE_COLUMNS, plot_scale, scale_markdown

    rows = [{c: 1.0 for c in TABLE_COLUMNS} | {"clients": n, "clients_per_round": k}
            for n, k in ((16, 16), (64, 64), (64, 16))]
    plot_scale(rows, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 0
    text = scale_markdown(rows, scale_summary(rows, 16), "fcl-ray bench --scale", "here")
    assert text.count("\n| 64 |") == 2 and "sampled_round_ratio: 1" in text
