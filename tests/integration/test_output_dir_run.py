"""A finished output folder on a real (tiny) federation: --resume with another label budget and
a plain second run are refused before anything is touched, --overwrite moves the old files
aside; and `fcl-ray -q run` prints no Ray notice on stderr."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from fcl_ray.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.yaml")
CHEAP = ["tracking.enabled=false", "pretrain.methods=[random]", "finetune.modes=[local]"]


def _args(*overrides: str) -> list[str]:
    return [arg for o in TINY + CHEAP + list(overrides) for arg in ("--set", o)]


def test_resume_with_another_budget_and_a_second_run_are_refused(ray_session, tmp_path,
                                                                  capsys):
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
    assert set(__import__("pandas").read_csv(out / "results.csv")["n_labeled"]) == {2}


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
