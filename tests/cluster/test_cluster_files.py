"""cluster/: the files a user takes to a real cluster are accepted there as written.

- The KubeRay manifests validate STRICTLY against the KubeRay v1 CRDs (an unknown field is an
  error, as with server-side field validation) and pass the operator's own rules
  (validation.go) plus this project's: the image of cluster/Dockerfile, token auth through
  ``authOptions``, autoscaling sized for the sweep, durable outputs, RayJob retry limits.
- The launcher YAML passes Ray's ``validate_config`` and has one node type per site.
- cluster/Dockerfile installs this package and agrees with pyproject.toml; every cluster file
  names the same image (cluster/image.sh sets it once).

The CRD schemas live outside the repository (``../shared/schemas`` beside the project root, or
``$FCL_SCHEMAS_DIR``); the schema tests skip with a reason where that folder is absent.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
KUBERAY = CLUSTER / "kuberay"
IMAGE_HOME = "/home/ray/fcl-ray"          # WORKDIR of cluster/Dockerfile
CLUSTER_FILES = [CLUSTER / "gpu-cluster.yaml", *sorted(KUBERAY.glob("*.yaml"))]
SCHEMAS = Path(os.environ.get("FCL_SCHEMAS_DIR") or REPO.parent / "shared" / "schemas")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}

needs_schemas = pytest.mark.skipif(
    not (SCHEMAS / "kuberay").is_dir(),
    reason=f"KubeRay CRD schemas not found in {SCHEMAS / 'kuberay'} (set FCL_SCHEMAS_DIR)")


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _manifests(kind: str | None = None) -> list[tuple[Path, dict]]:
    found = [(p, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in _docs(p)]
    return [(p, d) for p, d in found if kind is None or d.get("kind") == kind]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def _docker_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", _dockerfile(), re.M)
    assert match, f"cluster/Dockerfile has no 'ARG {name}=...'"
    return match.group(1)


# ----------------------------------------------------------------------------- strict CRD schema
def _strict(schema):
    """The CRD's OpenAPI schema as JSON Schema in which an unknown field is an error: objects
    with ``properties`` and no ``additionalProperties`` get ``additionalProperties: false``,
    unless Kubernetes keeps unknown fields there (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@lru_cache(maxsize=None)
def _crd_validator(kind: str):
    from jsonschema import Draft7Validator

    crd = yaml.safe_load((SCHEMAS / "kuberay" / CRD_FILES[kind]).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def schema_errors(manifest: dict) -> list[str]:
    """Every violation of the KubeRay v1 CRD, one line each (path: message)."""
    assert manifest.get("apiVersion") == "ray.io/v1", manifest.get("apiVersion")
    errors = _crd_validator(manifest["kind"]).iter_errors(manifest)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in errors)


# ----------------------------------------------------------------------------- operator rules
_QUALIFIED = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")


def _label_errors(group: str, labels: dict) -> list[str]:
    errors = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix))) \
                or not name or len(name) > 63 or not _QUALIFIED.match(name):
            errors.append(f"invalid label key for {group} group: '{key}'")
        if not isinstance(value, str) or len(value) > 63 \
                or (value and not _QUALIFIED.match(value)):
            errors.append(f"invalid label value for key '{key}' in {group} group: '{value}'")
    return errors


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def cluster_spec_errors(spec: dict) -> list[str]:
    """The rules of KubeRay's ValidateRayClusterSpec that the schema cannot express."""
    errors = []
    groups = [("Head", spec["headGroupSpec"])] + [(g.get("groupName", "?"), g)
                                                   for g in spec.get("workerGroupSpecs", [])]
    for name, group in groups:
        params = group.get("rayStartParams") or {}
        if not group["template"]["spec"].get("containers"):
            errors.append(f"{name} group should have at least one container")
        if "labels" in params:
            errors.append(f"rayStartParams['labels'] is not supported for {name} group; "
                          f"please use the top-level Labels field instead")
        if any(params.get(k) for k in _RESOURCE_PARAMS) and group.get("resources"):
            errors.append(f"resource fields set in both rayStartParams and Resources for {name}")
        errors += _label_errors(name, group.get("labels"))
    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = spec.get("rayVersion", "")
        if not version or _version(version) < (2, 52, 0):
            errors.append(f"authOptions.mode is 'token' but rayVersion is {version!r} "
                          f"(2.52.0 or later required)")
    return errors


def autoscaler_errors(spec: dict) -> list[str]:
    """Where label scheduling meets autoscaling: a worker group with Ray node labels that the
    autoscaler may grow needs autoscaler v2 (v1 scales on resources only and never adds a
    pod for a label_selector) and a Ray that scales for labels (2.51)."""
    if not spec.get("enableInTreeAutoscaling"):
        return []
    grows = [g.get("groupName", "?") for g in spec.get("workerGroupSpecs", [])
             if g.get("labels") and g.get("maxReplicas", 0) > g.get("minReplicas", 0)]
    errors = []
    if grows and (spec.get("autoscalerOptions") or {}).get("version") != "v2":
        errors.append(f"groups {', '.join(grows)} are pinned by labels and autoscaled, but "
                      f"autoscalerOptions.version is not v2")
    if grows and _version(spec.get("rayVersion", "")) < (2, 51, 0):
        errors.append(f"label-based autoscaling needs rayVersion 2.51.0 or later, got "
                      f"{spec.get('rayVersion')!r}")
    return errors


def manifest_errors(manifest: dict) -> list[str]:
    """KubeRay's ValidateRayCluster*/ValidateRayJob* rules for one manifest."""
    name = manifest["metadata"]["name"]
    kind = manifest["kind"]
    errors = []
    if not _DNS1035.match(name) or len(name) > (47 if kind == "RayJob" else 63):
        errors.append(f"{kind} name {name!r} is not a valid DNS-1035 label of allowed length")
    spec = manifest["spec"]
    if kind == "RayCluster":
        return errors + cluster_spec_errors(spec)
    if spec.get("rayClusterSpec") is None and not spec.get("clusterSelector"):
        errors.append("one of rayClusterSpec or clusterSelector must be set")
    if spec.get("rayClusterSpec"):
        errors += cluster_spec_errors(spec["rayClusterSpec"])
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        if not isinstance(runtime_env, dict):
            errors.append("runtimeEnvYAML is not a mapping")
    except yaml.YAMLError as err:
        errors.append(f"runtimeEnvYAML is not valid YAML: {err}")
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errors.append("activeDeadlineSeconds must be a positive integer")
    if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
        errors.append("backoffLimit must be >= 0")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errors.append("ttlSecondsAfterFinished must be >= 0")
    if spec.get("submissionMode") == "InteractiveMode" and (spec.get("backoffLimit") or 0) > 0:
        errors.append("backoffLimit is incompatible with InteractiveMode")
    return errors


# ----------------------------------------------------------------------------- the tests
def test_kuberay_folder_holds_a_raycluster_and_a_rayjob():
    kinds = sorted(d["kind"] for _, d in _manifests())
    assert "RayCluster" in kinds and "RayJob" in kinds, kinds


@needs_schemas
@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_manifests_match_the_crd_strictly(kind):
    for path, manifest in _manifests(kind):
        errors = schema_errors(manifest)
        assert not errors, f"{path.name}:\n" + "\n".join(errors[:20])


@needs_schemas
def test_strict_schema_check_catches_what_kubectl_refuses():
    """The checker itself: an unknown field, a misplaced field and a wrong type fail."""
    _, cluster = _manifests("RayCluster")[0]
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["gpuCount"] = 1                  # unknown field
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    bad["spec"]["authOptions"]["mode"] = "password"                      # not in the enum
    errors = schema_errors(bad)
    assert any("gpuCount" in e for e in errors), errors
    assert any("imagePullPolicy" in e for e in errors), errors
    assert any("authOptions.mode" in e for e in errors), errors
    _, job = _manifests("RayJob")[0]
    bad_job = copy.deepcopy(job)
    bad_job["spec"]["retries"] = 2
    assert any("retries" in e for e in schema_errors(bad_job))


def test_kuberay_manifests_pass_the_operator_rules():
    for path, manifest in _manifests():
        if manifest["kind"] in CRD_FILES:
            assert not manifest_errors(manifest), (path.name, manifest_errors(manifest))


def test_operator_rules_refuse_the_old_manifest_shapes():
    """What KubeRay >= 1.5 refused in the earlier manifests is caught here."""
    _, cluster = _manifests("RayCluster")[0]
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["rayStartParams"]["labels"] = "fcl-ray/pool=gpu"
    bad["spec"]["workerGroupSpecs"][0]["labels"] = {"fcl-ray/pool": "gpu pool"}
    bad["spec"]["rayVersion"] = "2.50.0"
    errors = manifest_errors(bad)
    assert any("top-level Labels" in e for e in errors)
    assert any("invalid label value" in e for e in errors)
    assert any("2.52.0" in e for e in errors)
    _, job = _manifests("RayJob")[0]
    bad_job = copy.deepcopy(job) | {"metadata": {"name": "FCL_sweep"}}
    bad_job["spec"] = bad_job["spec"] | {"activeDeadlineSeconds": 0, "backoffLimit": -1}
    assert len(manifest_errors(bad_job)) == 3, manifest_errors(bad_job)


def _ray_specs() -> list[tuple[str, dict]]:
    specs = [(p.name, d["spec"]) for p, d in _manifests("RayCluster")]
    return specs + [(p.name, d["spec"]["rayClusterSpec"]) for p, d in _manifests("RayJob")]


def test_label_pinned_autoscaled_groups_use_autoscaler_v2():
    specs = _ray_specs()
    assert any(g.get("labels") for _, s in specs for g in s["workerGroupSpecs"])   # it applies
    for name, spec in specs:
        assert not autoscaler_errors(spec), (name, autoscaler_errors(spec))
    v1 = copy.deepcopy(specs[0][1])
    del v1["autoscalerOptions"]["version"]
    v1["rayVersion"] = "2.50.0"
    assert len(autoscaler_errors(v1)) == 2, autoscaler_errors(v1)


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_kuberay_clusters_use_token_auth_options_and_the_project_image():
    images = set()
    for name, spec in _ray_specs():
        assert spec.get("authOptions", {}).get("mode") == "token", name
        assert spec["rayVersion"] == _docker_arg("RAY_VERSION"), name
        for container in _containers(spec):
            images.add(container["image"])
            env = {e["name"] for e in container.get("env", [])}
            # authOptions sets these; hand-written ones bypass the submitter and autoscaler
            assert not {e for e in env if e.startswith("RAY_AUTH_")}, (name, env)
            assert "MLFLOW_TRACKING_URI" in env, name
    assert images == {_cluster_image()}, images


def test_kuberay_outputs_go_to_a_volume_every_pod_mounts():
    pvcs = {d["metadata"]["name"]: d for _, d in _manifests("PersistentVolumeClaim")}
    assert all("ReadWriteMany" in p["spec"]["accessModes"] for p in pvcs.values()), pvcs
    for name, spec in _ray_specs():
        for group in [spec["headGroupSpec"]] + spec["workerGroupSpecs"]:
            pod = group["template"]["spec"]
            claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                      for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
            assert set(claims.values()) <= set(pvcs) and claims, (name, claims)
            for container in pod["containers"]:
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])
                          if m["name"] in claims}
                assert "/mnt/runs" in mounts, (name, container["name"])


def test_rayjob_runs_a_valid_sweep_from_the_image_with_durable_state():
    from fcl_ray.sweep.spec import load_sweep

    for path, job in _manifests("RayJob"):
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1 and spec["activeDeadlineSeconds"] > 0
        assert spec["submissionMode"] == "K8sJobMode"
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        # one copy of the code: the image's; no working_dir/pip download on top of it
        assert not {"working_dir", "pip", "py_modules"} & set(runtime_env), runtime_env
        words = spec["entrypoint"].split()
        assert words[:2] == ["fcl-ray", "sweep"] and "--resume" in words, words
        sweep_file = words[2]
        assert sweep_file.startswith(IMAGE_HOME + "/"), "absolute path inside the image"
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        storage = [s.split("=", 1)[1] for s in sets if s.startswith("sweep.storage_path=")]
        assert storage and storage[0].startswith("/mnt/runs/"), sets
        sweep = load_sweep(REPO / sweep_file.removeprefix(IMAGE_HOME + "/"), sets)
        _assert_autoscaling_fits(path.name, spec["rayClusterSpec"], sweep)


def _assert_autoscaling_fits(name: str, spec: dict, sweep) -> None:
    """The GPU group can grow to what the sweep asks at max_concurrent_trials, and not more
    than it can use; autoscaling is on where a group can grow."""
    groups = spec["workerGroupSpecs"]
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        if group["minReplicas"] < group["maxReplicas"]:
            assert spec.get("enableInTreeAutoscaling") is True, name
    clients = sweep.base_config.data.clients * max(sweep.max_concurrent_trials, 1)
    gpus_asked = clients * sweep.gpus_per_client
    cpus_asked = clients * sweep.cpus_per_client
    limits = [g["template"]["spec"]["containers"][0]["resources"]["limits"] for g in groups]
    gpus = sum(int(lim.get("nvidia.com/gpu", 0)) * g["maxReplicas"]
               for g, lim in zip(groups, limits))
    cpus = sum(float(lim["cpu"]) * g["maxReplicas"] for g, lim in zip(groups, limits))
    assert gpus >= gpus_asked and cpus >= cpus_asked, (name, gpus, gpus_asked, cpus, cpus_asked)


# ----------------------------------------------------------------------------- image
def _cluster_image() -> str:
    out = subprocess.run(["bash", str(CLUSTER / "image.sh"), "name"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_every_cluster_file_names_the_one_image_of_this_version():
    image = _cluster_image()
    assert image.endswith(f"/fcl-ray:{_pyproject()['project']['version']}"), image
    for path in CLUSTER_FILES:
        text = path.read_text()
        if "kind: PersistentVolumeClaim" in text:
            continue
        named = set(re.findall(r"image:\s*(\S+)", text))
        assert named == {image}, (path.name, named)
        assert "ray-ml" not in text, path.name   # ray-ml images are no longer published


def test_dockerfile_installs_this_package_as_pyproject_declares_it():
    text = _dockerfile()
    project = _pyproject()["project"]
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-gpu$", text, re.M)
    python = _docker_arg("PYTHON_TAG")   # py311 -> 3.11 meets requires-python
    major, minor = python[2], python[3:]
    floor = project["requires-python"].removeprefix(">=").split(".")
    assert (int(major), int(minor)) >= (int(floor[0]), int(floor[1]))
    # the Ray of the image is the Ray this project is tested with
    import ray
    assert _docker_arg("RAY_VERSION") == ray.__version__
    install = " ".join(re.findall(r"pip install [^\n&]+", text))
    package = re.search(r'"\.\[([a-z0-9_,-]*)\]"', install)
    assert package, f"no 'pip install \".[extras]\"' in the Dockerfile: {install}"
    extras = [e for e in package.group(1).split(",") if e]
    assert set(extras) <= set(project["optional-dependencies"]), extras
    assert "test" not in extras
    # torch, MONAI and MLflow come with the package (its dependencies); torch first so pip
    # picks the CUDA build; the Ray requirement of the image matches pyproject's extras.
    names = {re.split(r"[<>=\[ ;]", d)[0].lower() for d in project["dependencies"]}
    assert {"torch", "monai", "mlflow", "ray"} <= names
    ray_dep = next(d for d in project["dependencies"] if d.startswith("ray["))
    assert f"{ray_dep.split(']')[0]}]==${{RAY_VERSION}}" in install, install
    torch_dep = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert f'"{torch_dep}"' in install, (torch_dep, install)
    # what the install needs is copied in (and nothing is installed editable)
    copied = set(re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M))
    sources = {s for line in copied for s in line.split()}
    assert {"pyproject.toml", "README.md", "fcl_ray", "experiments"} <= sources, sources
    assert "-e " not in install


def test_image_script_sets_the_registry_once_in_every_file(tmp_path):
    copy_root = tmp_path / "repo"
    shutil.copytree(CLUSTER, copy_root / "cluster")
    shutil.copy(REPO / "pyproject.toml", copy_root)
    script = copy_root / "cluster" / "image.sh"
    version = _pyproject()["project"]["version"]

    def image_sh(*args):
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)

    used = image_sh("use", "ghcr.io/example")
    assert used.returncode == 0, used.stderr
    assert image_sh("name").stdout.strip() == f"ghcr.io/example/fcl-ray:{version}"
    for path in [copy_root / "cluster" / "gpu-cluster.yaml",
                 *(copy_root / "cluster" / "kuberay").glob("*.yaml")]:
        assert "REGISTRY/" not in path.read_text(), path.name
    # bad input: one line naming what is wrong, exit 2
    assert image_sh("use", "").returncode == 2
    job = copy_root / "cluster" / "kuberay" / "rayjob.yaml"
    job.write_text(job.read_text().replace(f"ghcr.io/example/fcl-ray:{version}",
                                           "other.io/x/fcl-ray:0.0.1", 1))
    mixed = image_sh("name")
    assert mixed.returncode == 2 and "different images" in mixed.stderr


def test_image_script_refuses_to_build_the_placeholder():
    if not _cluster_image().startswith("REGISTRY/"):
        pytest.skip("the cluster files already name a real registry")
    out = subprocess.run(["bash", str(CLUSTER / "image.sh"), "build"], capture_output=True,
                         text=True)
    assert out.returncode == 2 and "cluster/image.sh use <registry>" in out.stderr


# ----------------------------------------------------------------------------- launcher
def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "gpu-cluster.yaml").read_text())


def test_launcher_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    cfg = _launcher()
    validate_config(fillout_defaults(cfg))
    assert cfg["docker"]["image"] == _cluster_image()
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["worker_start_ray_commands"])
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["site_a"]["labels"] = {"site": 1}
    with pytest.raises(Exception):   # the checker is not a no-op
        validate_config(fillout_defaults(bad))


def test_launcher_has_one_gpu_node_type_per_site_with_its_resource_and_label():
    cfg = _launcher()
    types = cfg["available_node_types"]
    sites = {name: node for name, node in types.items() if name != cfg["head_node_type"]}
    assert len(sites) >= 2
    for name, node in sites.items():
        site_resources = [r for r in node["resources"] if r.startswith("site_")]
        assert site_resources == [name], (name, node["resources"])   # node type site_a: site_a
        assert node["labels"] == {"site": name.removeprefix("site_")}, name
        assert node["resources"]["GPU"] >= 1 and node["resources"]["CPU"] >= 1
        assert node["min_workers"] >= 1, f"{name}: a site is always there"
    assert cfg["max_workers"] >= sum(n["max_workers"] for n in sites.values())
    # the fcl_gpu sweep fits: per site, max_concurrent_trials clients of cpus/gpus_per_client
    from fcl_ray.sweep.spec import load_sweep

    sweep = load_sweep(REPO / "experiments/sweeps/fcl_gpu.yaml")
    assert sweep.base_config.data.clients <= len(sites)
    for name, node in sites.items():
        trials = sweep.max_concurrent_trials
        assert node["resources"][name] >= trials
        assert node["resources"]["CPU"] >= trials * sweep.cpus_per_client
        assert node["resources"]["GPU"] >= trials * sweep.gpus_per_client


def test_cluster_scripts_parse():
    for script in ("local.sh", "mlflow-server.sh", "image.sh"):
        assert subprocess.run(["bash", "-n", str(CLUSTER / script)]).returncode == 0
    env = os.environ | {"RAY_BIN": str(Path(sys.executable).parent / "ray")}
    for script in ("local.sh", "image.sh"):
        usage = subprocess.run(["bash", str(CLUSTER / script)], capture_output=True, text=True,
                               env=env)
        assert usage.returncode == 2 and "usage" in usage.stderr
