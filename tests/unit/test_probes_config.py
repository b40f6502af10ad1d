"""probes.* in the config (checked before Ray starts) and the probe table of the report."""
import itertools
from pathlib import Path

import pandas as pd
import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError, probe_methods
from fcl_ray.config_io import load_config
from fcl_ray.report import probe_table


def test_probes_are_off_by_default_and_every_encoder_when_enabled():
    cfg = load_config(None, ["pretrain.methods=[fcl,local_cl]"])
    assert not cfg.probes.enabled and cfg.probes.steps == 200 and cfg.probes.n_labeled == 1
    assert probe_methods(cfg) == ["random", "fcl", "local_cl"]   # random init: always there
    cfg = load_config(None, ["pretrain.methods=[fcl,random]", "probes.enabled=true",
                             "probes.methods=[random]"])
    assert probe_methods(cfg) == ["random"]


@pytest.mark.parametrize("overrides, message", [
    (["probes.methods=[fedswav]"],
     "'probes.methods': 'fedswav' is not an encoder of this run; allowed: random, fcl"),
    (["probes.methods=[upper_bound]"], "allowed: random, fcl"),
    (["probes.steps=0"], "'probes.steps': must be at least 1, got 0"),
    (["probes.n_labeled=0"], "'probes.n_labeled': must be at least 1, got 0"),
    (["probes.n_labeled=7"], "'probes.n_labeled': 7 labeled patients asked"),
    (["probes.enabled=true", "data.clients=1"], "'probes.enabled': the cross-site probes"),
    (["probes.enabled=maybe"], "'probes.enabled': expected bool"),
    (["probes.only=true"], "'probes.only': probes only (no fine-tuning) needs probes.enabled: true"),
])
def test_bad_probe_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["pretrain.methods=[fcl]", *overrides])
    assert message in str(err.value)


def test_probing_an_encoder_the_run_lacks_exits_2_with_one_line(capsys):
    quickstart = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
    assert main(["run", str(quickstart), "--set", "pretrain.methods=[fcl]", "--set", "probes.enabled=true",
                 "--set", "probes.methods=[local_cl]"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "probes.methods" in lines[0] and "allowed: random, fcl" in lines[0]


def _probes(methods=("random", "fcl"), folds=(0, 1), clients=(0, 1, 2)) -> pd.DataFrame:
    """value = base(method) + 0.1 * client + 0.02 * fold: the cells are known."""
    base = {"random": 0.3, "fcl": 0.5}
    return pd.DataFrame([{"method": m, "fold": f, "client": c, "probe": p,
                          "value": base[m] + 0.1 * c + 0.02 * f + (0.2 if p == "b" else 0)}
                         for m, f, c, p in itertools.product(methods, folds, clients, "ab")])


def test_probe_table_averages_folds_then_clients():
    table = probe_table(_probes(methods=("fcl", "random")))
    assert list(table.index) == ["random", "fcl"] and list(table.columns) == ["a", "b"]
    # client means 0.51, 0.61, 0.71: mean 0.61, population std 0.0816
    assert table.loc["fcl", "a"] == "0.610 ± 0.082" and table.loc["random", "b"] == "0.610 ± 0.082"


def test_report_prints_the_probe_table_beside_the_results(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame([{"method": m, "finetune_mode": "local", "n_labeled": 1, "fold": 0,
                   "client": c, "dice_mean": 0.5} for m in ("random", "fcl") for c in (0, 1)]
                 ).to_csv(run / "results.csv", index=False)
    assert main(["report", str(run / "results.csv")]) == 0
    assert "frozen-encoder probes" not in capsys.readouterr().out   # no probes.csv: no table
    _probes().to_csv(run / "probes.csv", index=False)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "### frozen-encoder probes" in out and "| fcl | 0.610 ± 0.082 | 0.810 ± 0.082 |" in out
    (run / "probes.csv").write_text("method,value\nfcl,1\n")
    assert main(["report", str(run / "results.csv")]) == 2
    assert "probes file" in capsys.readouterr().err
