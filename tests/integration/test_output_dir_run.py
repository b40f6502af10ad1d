"""A finished output folder on a real (tiny) federation: --resume with another label budget and
a plain second run are refused before anything is touched, a resume that adds a budget runs
only that one (and gets a fresh run's rows), --overwrite moves the old files aside; and
`fcl-ray -q run` prints no Ray notice on stderr."""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY
from fcl_ray.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.yaml")
CHEAP = ["tracking.enabled=false", "pretrain.methods=[random]", "finetune.modes=[local]"]


def _args(*overrides: str) -> list[str]:
    return [arg for o in TINY + CHEAP + list(overrides) for arg in ("--set", o)]


def test_resume_refuses_another_budget_extends_a_grown_one_and_a_second_run_is_refused(
        ray_session, tmp_path, capsys):
    out = tmp_path / "out"
    run = ["run", QUICKSTART, *_args(f"experiment.output_dir={out}", "finetune.n_labeled=[1]")]
    assert main(run) == 0
    kept = {name: (out / name).read_bytes() for name in ("results.csv", "config.yaml")}
    capsys.readouterr()

    # --resume with another label budget: one line naming the key, nothing rewritten.
    assert main(run + ["--set", "finetune.n_labeled=[2]", "--resume"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fcl-ray: error: --resume:") and "finetune.n_labeled [1] -> [2]" in line
    assert {name: (out / name).read_bytes() for name in kept} == kept

    # --resume with a budget added at the end of the list: N=1 kept as it was, N=2 run, and
    # its rows are those of a fresh run of both budgets (every setting draws its own seeds).
    assert main(run + ["--set", "finetune.n_labeled=[1,2]", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "[random] fold 0: local N=1 already in results.csv, kept" in err
    # Each start recorded where its clients computed; the same machine: no warning.
    starts = json.loads((out / "machine.json").read_text())
    assert [s["resumed"] for s in starts] == [False, True]
    (setup,) = starts[-1]["machines"]
    assert setup["clients"] == [0, 1] and setup["torch"] == torch.__version__
    assert "clients on 1 machine setup(s)" in err and "another machine setup" not in err
    grown = pd.read_csv(out / "results.csv")
    assert grown[grown.n_labeled == 1].to_csv(index=False) == \
        pd.read_csv(io.BytesIO(kept["results.csv"])).to_csv(index=False)
    fresh = tmp_path / "fresh"
    assert main(["run", QUICKSTART, *_args(f"experiment.output_dir={fresh}",
                                          "finetune.n_labeled=[1,2]")]) == 0
    both = pd.read_csv(fresh / "results.csv")
    columns = ["method", "n_labeled", "client", "dice_mean", "steps"]
    assert both[columns].equals(grown[columns]) and set(both.n_labeled) == {1, 2}
    kept = {name: (out / name).read_bytes() for name in kept}
    capsys.readouterr()

    # The same command again, without --resume: refused, nothing rewritten.
    assert main(run) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "already holds results" in line and "--overwrite" in line
    assert {name: (out / name).read_bytes() for name in kept} == kept

    # --overwrite: the old files are moved aside, a new run writes fresh ones.
    assert main(run + ["--set", "finetune.n_labeled=[2]", "--overwrite"]) == 0
    (previous,) = out.glob("previous-*")
    assert {name: (previous / name).read_bytes() for name in kept} == kept
    assert "n_labeled:\n  - 2" in (out / "config.yaml").read_text()
    assert set(pd.read_csv(out / "results.csv")["n_labeled"]) == {2}


def test_quiet_run_prints_no_ray_token_notice(tmp_path):
    """A run in its own process that starts its own Ray, as `fcl-ray -q run` from a shell does
    (RAY_AUTH_MODE unset: Ray's default, token authentication on, is what logs the notice)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["RAY_ADDRESS"] = "local"   # a new local Ray, never another cluster on this machine
    done = subprocess.run([sys.executable, "-m", "fcl_ray", "-q", "run", QUICKSTART,
                           *_args(f"experiment.output_dir={tmp_path / 'out'}")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Dice on held-out volumes" in done.stdout
    assert "Token authentication" not in done.stderr, done.stderr[-3000:]
