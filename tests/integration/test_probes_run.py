"""probes.enabled in a tiny real federation: probes.csv rows, MLflow metrics, --resume."""
from pathlib import Path

import pandas as pd
import pytest

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import run_experiment
from fcl_ray.methods.probes import PROBES
from fcl_ray.results import PROBE_COLUMNS

pytestmark = pytest.mark.integration


def test_probes_of_every_encoder_land_in_probes_csv(ray_session, tiny_overrides, tmp_path):
    """fcl (one federated encoder), local_cl (one encoder per client) and random init (not
    in pretrain.methods, probed all the same): one row per encoder, client and probe."""
    import mlflow

    cfg = load_config(None, tiny_overrides + [
        "pretrain.methods=[fcl,local_cl]", "probes.enabled=true", "probes.steps=5",
        "experiment.name=tiny-probes"])
    lines: list[str] = []
    run_experiment(cfg, log=lines.append)
    path = tmp_path / "out" / "probes.csv"
    probes = pd.read_csv(path)
    assert list(probes.columns) == PROBE_COLUMNS
    assert len(probes) == 3 * 2 * len(PROBES)                  # encoders x clients x probes
    assert set(probes["method"]) == {"random", "fcl", "local_cl"}
    assert set(probes["probe"]) == set(PROBES) and set(probes["fold"]) == {0}
    assert set(probes["client"]) == {0, 1}
    assert probes["value"].between(0, 1).all()
    assert any("[local_cl] probes fold 0 (mean over clients): partition_accuracy" in line
               for line in lines)

    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = mlflow.search_runs(experiment_names=["tiny-probes"], output_format="list")[0]
    for method in ("random", "fcl", "local_cl"):
        means = probes[probes.method == method].groupby("probe")["value"].mean()
        assert run.data.metrics[f"probe/{method}/segmentation_dice"] == pytest.approx(
            means["segmentation_dice"])

    # --resume keeps the probe rows: drop local_cl's results and probes as if the run had
    # stopped there; it is probed again (the same values: deterministic), the others are kept.
    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv")
    results[results.method != "local_cl"].to_csv(out / "results.csv", index=False)
    probes[probes.method != "local_cl"].to_csv(path, index=False)
    lines.clear()
    run_experiment(cfg, log=lines.append, resume=True)
    again = pd.read_csv(path)
    assert any(line.startswith("[random] fold 0: probes already in") for line in lines)
    assert sum("probes fold 0" in line for line in lines) == 1        # local_cl only
    key = ["method", "client", "probe"]
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True),
                                  probes.sort_values(key).reset_index(drop=True), atol=1e-6)


def test_probes_only_pretrains_and_probes_without_fine_tuning(ray_session, tiny_overrides,
                                                              tmp_path, capsys):
    """probes.only: probes.csv for random init and fcl, no results.csv, the probe table on
    stdout; the folder's probes are then finished results that a plain rerun must not drop."""
    from fcl_ray.cli import main

    overrides = tiny_overrides + ["pretrain.methods=[fcl]", "probes.enabled=true",
                                  "probes.steps=5", "probes.only=true", "tracking.enabled=false"]
    quickstart = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
    args = ["run", quickstart] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    out = tmp_path / "out"
    assert not (out / "results.csv").exists()
    probes = pd.read_csv(out / "probes.csv")
    assert set(probes["method"]) == {"random", "fcl"} and len(probes) == 2 * 2 * len(PROBES)
    import fcl_ray

    again = fcl_ray.run(quickstart, overrides, resume=True)   # every probe is there already
    assert again.table.empty
    pd.testing.assert_frame_equal(again.probes(), probes)
    printed = capsys.readouterr().out
    assert "probes.only: nothing fine-tuned" in printed
    assert "| fcl " in printed and "segmentation_dice" in printed

    assert main(args) == 2   # refused in one line, the probes kept
    assert "already holds results (probes.csv)" in capsys.readouterr().err
    pd.testing.assert_frame_equal(pd.read_csv(out / "probes.csv"), probes)
