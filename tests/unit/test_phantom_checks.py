"""experiments/phantom_checks.py: the shortcut probe on both phantoms, calibration and gate."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("phantom_checks",
                                              ROOT / "experiments" / "phantom_checks.py")
checks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(checks)

TINY = ["data.clients=2", "data.cases_per_client=4", "data.folds=2", "data.image_size=32",
        "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
        "pretrain.methods=[random]"]


def _results(path: Path) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for client in range(4):
        for method, n, dice in (("random", 1, 0.30), ("random", 8, 0.82),
                                ("supervised_encoder", 1, 0.45), ("supervised_encoder", 8, 0.85)):
            rows.append({"method": method, "finetune_mode": "local", "n_labeled": n, "fold": 0,
                         "client": client, "seed": 0,
                         "dice_mean": dice + rng.normal(0, 0.01)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_checks_print_shortcut_calibration_and_gate(tmp_path, capsys):
    assert checks.main(["--config", str(ROOT / "experiments" / "benchmark_v2.yaml"),
                        "--seeds", "0", "--results", _results(tmp_path / "r.csv"),
                        *[x for o in TINY for x in ("--set", o)]]) == 0
    out = capsys.readouterr().out
    assert "| v2 | 0 |" in out and "| v1 | 0 |" in out           # both phantoms probed
    assert "ratio 0.36 -> PASS (35%-50%)" in out                 # about 0.30 / 0.82
    assert "upper bound (random init at N=8) 0.8" in out and "-> PASS (>= 0.8)" in out
    assert "gate holds" in out


def test_calibration_reads_upper_bound_rows_first():
    rows = pd.DataFrame([{"method": m, "finetune_mode": "local", "n_labeled": n, "dice_mean": d}
                         for m, n, d in (("random", 1, 0.2), ("random", 8, 0.7),
                                         ("upper_bound", 10, 0.85))])
    cal = checks.calibration(rows)
    assert cal["ratio"] == 0.2 / 0.7 and cal["upper_bound"] == 0.85


def test_the_ratio_has_an_interval_over_sites_and_a_line_per_seed(tmp_path, capsys):
    """Sites resampled with their N=1 and N=8 rows together: a spread that straddles the
    band is said to; every seed gets its own line."""
    rows = [{"method": "random", "finetune_mode": "local", "n_labeled": n, "fold": 0,
             "client": c, "seed": seed, "dice_mean": d}
            for seed in (1, 2) for c in range(6)
            for n, d in ((1, 0.25 + 0.05 * c), (8, 0.8))]
    frame = pd.DataFrame(rows)
    low, high, sites = checks.ratio_interval(frame)
    assert sites == 12 and low < frame[frame.n_labeled == 1].dice_mean.mean() / 0.8 < high
    assert 0.35 < low < 0.45 and 0.45 < high < 0.55   # clients 0.31-0.69 of N=8
    one = frame[frame.n_labeled == 8]
    assert np.isnan(checks.ratio_interval(one)[0])     # no N=1 rows: no interval
    frame.to_csv(tmp_path / "r.csv", index=False)
    checks.main(["--config", str(ROOT / "experiments" / "benchmark_v2.yaml"), "--seeds", "0",
                 "--results", str(tmp_path / "r.csv"), *[x for o in TINY for x in ("--set", o)]])
    out = capsys.readouterr().out
    assert "(bootstrap over 12 sites): across the edge of the target" in out
    assert "  seed 1: N=1 0.375, N=8 0.800, ratio 0.47" in out and "  seed 2:" in out


def test_a_phantom_change_is_compared_site_by_site_with_its_baseline():
    """Only sites in both runs count; a change that lowers N=1 by 0.1 everywhere and leaves
    N=8 shows as about -0.1 on N=1, 0 on N=8 and -0.1/0.8 on the ratio, with intervals."""
    def rows(n1_shift, clients):
        return pd.DataFrame([{"method": "random", "finetune_mode": "local", "n_labeled": n,
                              "fold": 0, "client": c, "seed": seed,
                              "dice_mean": d + (n1_shift if n == 1 else 0.0)}
                             for seed in (0, 1) for c in clients
                             for n, d in ((1, 0.40 + 0.02 * c), (8, 0.80 - 0.01 * c))])
    per_seed, change = checks.calibration_change(rows(-0.1, range(3)), rows(0.0, range(5)))
    assert change["sites"] == 6 and list(per_seed.index) == [0, 1]
    assert change["n1"][0] == pytest.approx(-0.1) and change["n8"][0] == pytest.approx(0.0)
    mean, low, high = change["ratio"]
    assert mean == pytest.approx(-0.1 / 0.79) and low <= mean <= high
    with pytest.raises(checks.FclRayError, match="--baseline"):
        checks.calibration_change(rows(0.0, [0]), rows(0.0, [1]).assign(seed=5))
