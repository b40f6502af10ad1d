"""A few bad inputs through the real command line (issue 29): exit code 2, one stderr line,
and nothing started: Ray and MLflow are shadowed by packages that fail on import, so a
check that came after ``import ray`` (or MLflow) would show as a traceback here."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


@pytest.fixture(scope="module")
def no_ray(tmp_path_factory) -> dict:
    """An environment in which ``import ray`` and ``import mlflow`` fail."""
    shadow = tmp_path_factory.mktemp("shadow")
    for package in ("ray", "mlflow"):
        (shadow / package).mkdir()
        (shadow / package / "__init__.py").write_text(
            f"raise ImportError('{package} imported before the input was checked')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), str(ROOT)]))
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _case(name: str, tmp_path: Path, env: dict) -> tuple[list[str], dict, str]:
    """(arguments, environment, expected text) of one bad input."""
    out = tmp_path / "out"
    run = ["run", str(QUICKSTART), "--set", f"experiment.output_dir={out}"]
    if name == "config_is_a_list":
        (tmp_path / "list.yaml").write_text("- data\n- pretrain\n")
        return ["run", str(tmp_path / "list.yaml")], env, "expected a mapping of sections"
    if name == "infinite_lr":
        return run + ["--set", "pretrain.lr=.inf"], env, "'pretrain.lr': must be finite"
    if name == "output_dir_is_a_file":
        out.write_text("a file\n")
        return run, env, "'experiment.output_dir' '" + str(out) + "': is a file, not a folder"
    if name == "unknown_tracking_scheme":
        return run, dict(env, MLFLOW_TRACKING_URI="bogus://host"), "has an unknown scheme"
    if name == "garbage_latest_pointer":
        (out / "checkpoints" / "fcl-fold0").mkdir(parents=True)
        (out / "checkpoints" / "fcl-fold0" / "LATEST").write_bytes(b"\x00garbage")
        return run + ["--resume"], env, "checkpoint pointer"
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["config_is_a_list", "infinite_lr", "output_dir_is_a_file",
                                  "unknown_tracking_scheme", "garbage_latest_pointer"])
def test_bad_input_exits_2_with_one_line_before_ray(name, tmp_path, no_ray):
    argv, env, expected = _case(name, tmp_path, no_ray)
    proc = subprocess.run([sys.executable, "-m", "fcl_ray", *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("fcl-ray: error: "), proc.stderr
    assert expected in lines[0], lines[0]
