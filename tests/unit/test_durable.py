"""Outputs that outlive a Ray job: relative paths inside a job's temporary working dir are
refused with one line naming the key; outside a job nothing changes."""
import pytest

from fcl_ray.cli import main
from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.durable import check_durable_outputs, job_working_dir

JOB_DIR = "/tmp/ray/session_2026/runtime_resources/working_dir_files/_ray_pkg_0a1b"


def test_job_working_dir_is_found_from_any_folder_below_it():
    assert job_working_dir(JOB_DIR) == JOB_DIR
    assert job_working_dir(JOB_DIR + "/experiments") == JOB_DIR
    assert job_working_dir("/home/me/fcl-ray") is None


@pytest.mark.parametrize("override, key", [
    ("experiment.output_dir=runs/x", "experiment.output_dir"),
    ("federation.checkpoint_dir=ckpt", "federation.checkpoint_dir"),
    ("tracking.uri=sqlite:///mlflow.db", "tracking.uri"),
])
def test_relative_outputs_in_a_job_are_refused(override, key):
    cfg = load_config(None, ["experiment.output_dir=/shared/runs/x",
                             "tracking.uri=http://mlflow:5000", override])
    with pytest.raises(ConfigError, match=key) as err:
        check_durable_outputs(cfg, cwd=JOB_DIR)
    assert "deletes with the job" in str(err.value) and "\n" not in str(err.value)


def test_durable_outputs_pass_in_a_job_and_anything_passes_outside():
    durable = load_config(None, ["experiment.output_dir=/shared/runs/x",
                                 "federation.checkpoint_dir=s3://bucket/ckpt",
                                 "tracking.uri=sqlite:////shared/mlflow.db"])
    check_durable_outputs(durable, storage_path="gs://bucket/sweeps", cwd=JOB_DIR)
    no_tracking = load_config(None, ["experiment.output_dir=/shared/x", "tracking.enabled=false"])
    check_durable_outputs(no_tracking, cwd=JOB_DIR)
    relative = load_config(None, [])   # runs/quickstart, sqlite:///mlflow.db
    check_durable_outputs(relative, storage_path="runs/sweeps", cwd="/home/me/fcl-ray")
    with pytest.raises(ConfigError, match="sweep.storage_path 'runs/sweeps'"):
        check_durable_outputs(durable, storage_path="runs/sweeps", cwd=JOB_DIR)


def test_cli_in_a_job_dir_stops_before_running(tmp_path, monkeypatch, capsys):
    """`fcl-ray run` started inside a (real) folder laid out like a job's working dir."""
    job_dir = tmp_path / "runtime_resources" / "working_dir_files" / "_ray_pkg_42"
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pathlib import Path
    quickstart = str(Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml")
    assert main(["run", quickstart]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("fcl-ray: error: experiment.output_dir 'runs/quickstart' is relative")
    assert not (job_dir / "runs").exists()
