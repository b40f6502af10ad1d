"""cluster/: a real multi-node Ray cluster (cluster/local.sh, token auth on) runs the quickstart
submitted through the Jobs API. (The cluster files themselves: tests/cluster/test_cluster_files.py.)"""
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent


def _ray(args: list[str], env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


# cluster/local.sh with FCL_PORT_BASE=b: node i takes b + 20 i .. and worker ports
# b + 1000 + 200 i ..; for a head and 2 sites everything lies in [b, b + 2000).
PORT_BLOCK = 2000


def free_ports_outside(start: int, stop: int, count: int) -> list[int]:
    """``count`` distinct free ports not in [start, stop): the OS's ephemeral ports overlap the
    block the cluster's nodes take, and a GCS port among the worker ports stops the head (seen
    in CI)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if not start <= port < stop and port not in ports:
            ports.append(port)
    return ports


@pytest.fixture
def local_cluster(tmp_path_factory):
    """A head + 2 site workers on this machine, on their own ports and temp dir (so the
    session's local Ray and other Ray instances are untouched); stopped afterwards."""
    state = Path(f"/tmp/fclc-{os.getpid()}")   # short: Ray's socket paths have a length limit
    base = random.randrange(30000, 45000, 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    gcs_port, dashboard_port = free_ports_outside(base, base + PORT_BLOCK, 2)
    env |= {"FCL_CLUSTER_DIR": str(state), "FCL_CLUSTER_PORT": str(gcs_port),
            "FCL_DASHBOARD_PORT": str(dashboard_port), "FCL_PORT_BASE": str(base),
            "FCL_HEAD_CPUS": "1", "FCL_WORKER_CPUS": "1", "RAY_BIN": str(BIN / "ray")}
    up = subprocess.run(["bash", str(CLUSTER / "local.sh"), "up"], env=env, capture_output=True,
                        text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield {"env": env, "dashboard": f"http://127.0.0.1:{env['FCL_DASHBOARD_PORT']}"}
    finally:
        subprocess.run(["bash", str(CLUSTER / "local.sh"), "down"], env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def _wait_for_job(job_id: str, env: dict, timeout_s: float = 240) -> tuple[str, str]:
    """Poll `ray job status` until the job ends; (status text, upper-cased), and its logs."""
    status = ""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        answer = _ray(["job", "status", job_id], env)
        status = (answer.stdout + answer.stderr).upper()   # "... succeeded" / "SUCCEEDED"
        if any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(3)
    return status, _ray(["job", "logs", job_id], env).stdout


@pytest.mark.cluster
def test_jobs_api_runs_the_quickstart_on_a_local_cluster(local_cluster, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    client_env = local_cluster["env"] | {"RAY_ADDRESS": local_cluster["dashboard"],
                                         "RAY_AUTH_MODE": "token"}
    # Token authentication is on: without the token the Jobs API refuses.
    anonymous = {k: v for k, v in client_env.items() if k != "RAY_AUTH_MODE"}
    refused = _ray(["job", "list"], anonymous | {"RAY_AUTH_MODE": "disabled"})
    assert refused.returncode != 0 and "Authentication" in refused.stdout + refused.stderr

    out = tmp_path / "out"
    sets = TINY + [f"experiment.output_dir={out}", "experiment.name=jobs-api-quickstart",
                   f"tracking.uri={mlflow_server['uri']}",
                   # num_cpus_per_client stays 'auto' (the README's command): what a site's
                   # node offers, not the cluster's CPUs / clients (which no node had)
                   "federation.client_resources=[{site_a: 1}, {site_b: 1}]"]
    job_id = f"fcl-quickstart-{os.getpid()}"
    submit = _ray(["job", "submit", "--no-wait", "--submission-id", job_id, "--working-dir", ".",
                   "--", "fcl-ray", "run", "experiments/quickstart.yaml",
                   *[a for s in sets for a in ("--set", s)]], client_env)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status, logs = _wait_for_job(job_id, client_env)
    assert "SUCCEEDED" in status, status + logs[-3000:]

    results = pd.read_csv(out / "results.csv")
    assert set(results["method"]) == {"fcl", "random"} and len(results) == 4
    run = MlflowClient(mlflow_server["uri"]).search_runs(
        [MlflowClient(mlflow_server["uri"]).get_experiment_by_name("jobs-api-quickstart")
         .experiment_id])[0]
    assert run.info.status == "FINISHED" and "dice_mean/fcl/local/N1" in run.data.metrics

    # Each client ran on its own site's node (site_a / site_b worker).
    nodes = json.loads(_ray(["list", "nodes", "--detail", "--format", "json"], client_env).stdout)
    site_nodes = {n["node_id"] for n in nodes
                  if any(k.startswith("site_") for k in n["resources_total"])}
    actors = json.loads(_ray(["list", "actors", "--detail", "--format", "json",
                              "-f", "class_name=ClientActor"], client_env).stdout)
    assert len(site_nodes) == 2 and {a["node_id"] for a in actors} == site_nodes

    # The same command without an absolute output_dir would write inside the job's temporary
    # working dir, which Ray deletes with the job: refused in one line before anything runs.
    doomed = f"fcl-relative-{os.getpid()}"
    submit = _ray(["job", "submit", "--no-wait", "--submission-id", doomed, "--working-dir", ".",
                   "--", "fcl-ray", "-v", "run", "experiments/quickstart.yaml",
                   "--set", f"tracking.uri={mlflow_server['uri']}"], client_env)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status, logs = _wait_for_job(doomed, client_env, timeout_s=120)
    assert "FAILED" in status, status + logs[-3000:]
    assert "fcl-ray: error: experiment.output_dir 'runs/quickstart' is relative" in logs, logs
    # The code that ran is the uploaded working dir, not the checkout installed in .venv.
    (origin,) = [line for line in logs.splitlines() if "fcl_ray code from" in line]
    assert "runtime_resources/working_dir_files/" in origin, origin
