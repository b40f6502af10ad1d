"""cluster/: the YAML files are well-formed for Ray and KubeRay; and a real multi-node Ray
cluster (cluster/local.sh, token auth on) runs the quickstart submitted through the Jobs API."""
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
import yaml

from conftest import TINY
from mlflow_server import free_port, mlflow_server  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent


def test_launcher_yaml_names_required_fields():
    cfg = yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands", "setup_commands"):
        assert key in cfg, key
    assert cfg["provider"]["type"] and cfg["head_node_type"] in cfg["available_node_types"]
    for name, node in cfg["available_node_types"].items():
        assert {"node_config", "resources", "max_workers"} <= set(node), name
    assert any(n["resources"].get("GPU") for n in cfg["available_node_types"].values())
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["head_start_ray_commands"])
    # Ray's own schema for the launcher config accepts it
    from ray.autoscaler._private.util import fillout_defaults, validate_config
    validate_config(fillout_defaults(cfg))


def _containers(pod_template: dict) -> list[dict]:
    containers = pod_template["spec"]["containers"]
    assert containers and all("image" in c and "name" in c for c in containers)
    return containers


def _check_ray_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head
    env = {e["name"] for e in _containers(head["template"])[0]["env"]}
    assert {"RAY_AUTH_MODE", "MLFLOW_TRACKING_URI"} <= env
    workers = spec["workerGroupSpecs"]
    assert workers
    for group in workers:
        assert {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams",
                "template"} <= set(group)
        limits = _containers(group["template"])[0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_kuberay_manifests_name_required_fields():
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    _check_ray_cluster_spec(cluster["spec"])

    job = yaml.safe_load((CLUSTER / "kuberay" / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["entrypoint"].startswith("fcl-ray ")
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert "pip" in runtime_env and "MLFLOW_TRACKING_URI" in runtime_env["env_vars"]
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    # the sweep the job runs exists and is valid
    from fcl_ray.tune import load_sweep
    load_sweep(REPO / spec["entrypoint"].split()[2])


def test_cluster_scripts_parse():
    for script in ("local.sh", "mlflow-server.sh"):
        assert subprocess.run(["bash", "-n", str(CLUSTER / script)]).returncode == 0
    usage = subprocess.run(["bash", str(CLUSTER / "local.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def _ray(args: list[str], env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture
def local_cluster(tmp_path_factory):
    """A head + 2 site workers on this machine, on their own ports and temp dir (so the
    session's local Ray and other Ray instances are untouched); stopped afterwards."""
    state = Path(f"/tmp/fclc-{os.getpid()}")   # short: Ray's socket paths have a length limit
    base = random.randrange(30000, 45000, 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env |= {"FCL_CLUSTER_DIR": str(state), "FCL_CLUSTER_PORT": str(free_port()),
            "FCL_DASHBOARD_PORT": str(free_port()), "FCL_PORT_BASE": str(base),
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
                   f"tracking.uri={mlflow_server['uri']}", "federation.num_cpus_per_client=1",
                   "federation.client_resources=[{site_a: 1}, {site_b: 1}]"]
    job_id = f"fcl-quickstart-{os.getpid()}"
    submit = _ray(["job", "submit", "--no-wait", "--submission-id", job_id, "--working-dir", ".",
                   "--", "fcl-ray", "run", "experiments/quickstart.yaml",
                   *[a for s in sets for a in ("--set", s)]], client_env)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    status = ""
    deadline = time.time() + 240
    while time.time() < deadline:
        answer = _ray(["job", "status", job_id], client_env)
        status = (answer.stdout + answer.stderr).upper()   # "... succeeded" / "SUCCEEDED"
        if any(s in status for s in ("SUCCEEDED", "FAILED", "STOPPED")):
            break
        time.sleep(3)
    logs = _ray(["job", "logs", job_id], client_env).stdout
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
