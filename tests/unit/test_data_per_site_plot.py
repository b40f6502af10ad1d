"""experiments/data_per_site_plot.py: regimes stacked, client-level CIs, one bad-input line."""
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("data_per_site_plot",
                                              ROOT / "experiments" / "data_per_site_plot.py")
plot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot)


def _results(path: Path, gain: float) -> str:
    rng = np.random.default_rng(int(gain * 100))
    rows = []
    for method, shift in (("local_cl", 0.0), ("fcl", gain), ("fcl_no_exchange", 0.01)):
        for mode in ("local", "federated"):
            for fold in range(3):
                for client in range(4):
                    dice = 0.5 + 0.05 * client + shift + rng.normal(0, 0.005)
                    rows.append({"method": method, "finetune_mode": mode, "n_labeled": 1,
                                 "fold": fold, "client": client, "dice_mean": dice, "seed": 0})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_regime_table_and_plot(tmp_path, capsys):
    inputs = [f"{_results(tmp_path / f'p{p}.csv', gain)}:{p}"
              for p, gain in ((2, 0.08), (4, 0.04), (8, 0.0))]
    assert plot.main([*inputs, "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "regime.csv")
    vs = table[(table.method == "fcl_no_exchange") & (table.finetune_mode == "local")]
    assert list(vs.patients_per_site) == [2, 4, 8]
    assert vs.mean_diff.round(2).tolist() == [0.07, 0.03, -0.01]
    assert (vs.client_ci_low < vs.mean_diff).all() and (vs.n_clients == 4).all()
    assert (tmp_path / "out" / "regime.png").stat().st_size > 0
    assert "patients per site" in (tmp_path / "out" / "regime.md").read_text()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert plot.main([str(tmp_path / "missing.csv") + ":2", "--out", str(tmp_path)]) == 2
    assert plot.main(["results.csv", "--out", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("data_per_site_plot: error: ") for line in lines)
