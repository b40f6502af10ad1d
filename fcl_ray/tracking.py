"""MLflow tracking, optional at import time (the GPU machine and minimal installs lack it).

Default store: a SQLite file ``mlflow.db`` in the working directory, which ``mlflow ui``
opens; ``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` point it at a server instead (e.g. the
one ``cluster/mlflow-server.sh up`` starts; every actor of a cluster then logs to it).

Run layout, the same for ``fcl-ray run`` and for each trial of ``fcl-ray sweep``:
params = the flattened config; per-round metrics with ``step``; artifacts = resolved config,
results CSV, plots; tags ``method``, ``mode``, ``N``, ``seed``, ``clients``, ``dataset`` (and
:func:`run_tags`' extras) for filtering and charting in the MLflow UI. A sweep adds one parent
run; its trials are child runs (tag ``mlflow.parentRunId``), set up with a :class:`TrackingContext`.
Runs are named ``<experiment>-<methods>-<YYYYmmdd-HHMMSS>``; experiments carry MLflow's
model-training experiment kind. MLflow 3's UI still opens on its GenAI view in a new browser:
:func:`run_link` prints links that select the "Model training" view.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from fcl_ray.config import Config
from fcl_ray.config_io import flatten, to_dict

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3's experiment kind tag and its value for classic model training (the names MLflow's
# own UI code uses: mlflow/server/js, CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def resolve_uri(cfg: Optional[Config] = None) -> str:
    uri = (cfg.tracking.uri if cfg is not None else None) \
        or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    return absolute_uri(uri)


# The stores MLflow itself opens (mlflow/tracking/_tracking_service/utils.py); a plugin adds
# its schemes as "mlflow.tracking_store" entry points. A URI without a scheme is a folder.
TRACKING_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql", "http", "https",
                    "databricks")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")   # two letters at least: C:\ is a path


def uri_scheme(uri: str) -> Optional[str]:
    """``postgresql+psycopg2://...`` -> ``postgresql``; None for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower().split("+")[0] if match else None


def tracking_uri_problem(uri: str) -> Optional[str]:
    """Why MLflow cannot open ``uri`` as a tracking store (one line), or None; the scheme
    only, without importing MLflow or touching the store."""
    if not uri.strip():
        return "is empty"
    name = uri_scheme(uri)
    if name is None or name in TRACKING_SCHEMES:
        return None
    from importlib.metadata import entry_points

    plugins = sorted(e.name for e in entry_points(group="mlflow.tracking_store"))
    if name in plugins:
        return None
    return (f"has an unknown scheme '{name}:'; MLflow stores are "
            f"{', '.join(s + ':' for s in TRACKING_SCHEMES + tuple(plugins))} or a folder")


def absolute_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``: Ray workers (Tune trials) do not
    share the driver's working directory, so a relative store would split the runs."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/") \
            and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def config_tags(cfg: Config) -> dict[str, str]:
    """The tags the MLflow UI filters and charts by: method, mode, N, seed, clients."""
    return {"method": ",".join(cfg.pretrain.methods),
            "mode": ",".join(cfg.finetune.modes),
            "N": ",".join(map(str, cfg.finetune.n_labeled)),
            "seed": str(cfg.experiment.seed),
            "clients": str(cfg.data.clients),
            "dataset": cfg.data.kind}


def encoder_label(uri: str) -> str:
    """The method name the result rows of a fine-tune from ``uri`` carry:
    ``models:/cardiac-fcl/3`` -> ``cardiac-fcl-v3``, ``models:/cardiac-fcl@best`` ->
    ``cardiac-fcl-best``; an unregistered model (``models:/m-<id>``, ``runs:/...``) ->
    ``pretrained``."""
    match = re.match(r"^models:/([^/@]+)(?:/([^/]+)|@([^/]+))$", uri)
    if match is None:
        return "pretrained"
    name, version, alias = match.groups()
    return f"{name}-v{version}" if version and version.isdigit() else f"{name}-{version or alias}"


def method_rows(cfg: Config) -> list[str]:
    """The method names of a run's result rows: the pre-training methods or, when fine-tuning
    from a given encoder (``finetune.encoder``), its label and the no-pre-training baselines."""
    if not cfg.finetune.encoder:
        return list(cfg.pretrain.methods)
    from fcl_ray.methods import REGISTRY   # a dict of names; no method module is imported

    return [encoder_label(cfg.finetune.encoder)] + [m for m in cfg.pretrain.methods
                                                    if REGISTRY.get(m) is None]


def run_name(cfg: Config, when: Optional[float] = None) -> str:
    """``<experiment>-<methods>-<YYYYmmdd-HHMMSS>``: readable in the runs table, sortable."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(when))
    return f"{cfg.experiment.name}-{'+'.join(method_rows(cfg))}-{stamp}"


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The package version and, from a git checkout, the commit (``+dirty`` when the working
    tree has changes); empty values are left out."""
    from importlib import metadata

    found = {}
    try:
        found["fcl_ray_version"] = metadata.version("fcl-ray")
    except metadata.PackageNotFoundError:
        pass
    here = Path(__file__).resolve().parent
    try:   # only our own checkout counts (an installed copy may sit inside another repo)
        commit = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        top, _, head = commit.stdout.strip().partition("\n")
        if commit.returncode == 0 and Path(top).resolve() == here.parent:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=here, capture_output=True, text=True, timeout=5)
            found["git_commit"] = head.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):   # no git, or not a checkout
        pass
    return found


def run_tags(cfg: Config) -> dict[str, str]:
    """Every tag a run carries from its config: :func:`config_tags` plus folds, fine-tuning
    modes, site count, dataset location, the encoder fine-tuned from, and code version."""
    d = cfg.data
    tags = config_tags(cfg) | {
        "methods": ",".join(method_rows(cfg)),
        "finetune_modes": ",".join(cfg.finetune.modes),
        "n_labeled": ",".join(map(str, cfg.finetune.n_labeled)),
        "folds": ",".join(map(str, cfg.finetune.folds)),
        "sites": str(d.clients)}
    if cfg.finetune.encoder:
        tags["method"] = tags["methods"]
        tags["finetune_encoder"] = cfg.finetune.encoder
    if d.kind != "synthetic":
        tags["dataset_root"] = redact(d.root or ",".join(d.client_roots))[:500]
    return tags | code_version()


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name`` (created if missing), tagged as a model-training
    experiment unless it already says what kind it is."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:   # noqa: BLE001  (created meanwhile by a parallel trial)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return exp.experiment_id


LOCAL_UI = "http://127.0.0.1:5000"   # where `mlflow ui` serves a local store by default


def _ui_base(uri: str) -> Optional[str]:
    """The MLflow UI that shows the runs of store ``uri``: the tracking server itself, or for
    a local store (sqlite, files) the ``mlflow ui`` started on it; None for other stores."""
    if uri.startswith(("http://", "https://")):
        return redact(uri).rstrip("/")
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return LOCAL_UI
    return None


def run_link(uri: str, experiment_id: str, run_id: str) -> list[str]:
    """Where to look at a run: the UI link on a server; for a local store the ``mlflow ui``
    command and the page to open once it runs."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    # MLflow 3's UI starts on its GenAI view; this query switches to "Model training".
    table = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    shown = redact(uri)
    base = _ui_base(uri)
    if uri.startswith(("http://", "https://")):
        return [f"MLflow run: {base}/{page}", f"MLflow runs table: {base}/{table}"]
    if base is not None:
        return [f"MLflow run {run_id} in {shown}; to open it, run",
                f"  mlflow ui --backend-store-uri {shlex.quote(uri)}",
                f"  and open {base}/{page}",
                f"  (runs table: {base}/{table})"]
    return [f"MLflow run {run_id} (experiment {experiment_id}) at {shown}"]


def run_link_by_id(uri: str, run_id: str) -> list[str]:
    """:func:`run_link` for a run known by id only (e.g. a sweep's parent run)."""
    from mlflow import MlflowClient

    return run_link(uri, MlflowClient(uri).get_run(run_id).info.experiment_id, run_id)


def run_url(uri: str, run_id: str) -> Optional[str]:
    """The run's page in the MLflow UI (for a local store: once ``mlflow ui
    --backend-store-uri <uri>`` runs); None for a store without a known UI."""
    base = _ui_base(uri)
    if base is None:
        return None
    from mlflow import MlflowClient

    experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def mark_killed(uri: str, run_id: str, signum: int) -> None:
    """A run stopped by a signal, not broken: KILLED in MLflow (as ``ray job stop`` marks
    it), with the signal as its ``ended_by`` tag."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "ended_by", f"signal {signum}")
    client.set_terminated(run_id, status="KILLED")


@dataclass
class TrackingContext:
    """Where the MLflow run that :func:`run_experiment` starts belongs; passed in by its caller.

    ``parent_run_id``: a sweep's parent run (the new run becomes its child); ``tags``: extra
    tags (a Tune trial's id and name). ``run_id`` goes both ways: None starts a new run and the
    tracker writes its id here, so the caller can tag it or mark it KILLED after a stop; an id
    given by the caller is continued instead (a resumed Tune trial keeps its one run).
    ``fcl-ray run`` passes an empty context; no context at all is a standalone run too."""
    parent_run_id: Optional[str] = None
    tags: dict[str, Any] = field(default_factory=dict)
    run_id: Optional[str] = None


def redact(text: str) -> str:
    """Hide credentials in URIs (``scheme://user:secret@host`` -> ``scheme://***@host``)
    so that no password lands in MLflow params or logs."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


class NullTracker:
    """Used when tracking is off: every call is a no-op."""
    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    client_uri: Optional[str] = None

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


def _reopen_tags(client, run_id: str) -> dict[str, str]:
    """A run about to be continued: its ``ended_by`` tag (how the earlier attempt stopped)
    is deleted, since the run has not ended now, and kept as ``resumed_after`` (the earlier
    status when there was no tag, e.g. RUNNING after a SIGKILLed driver)."""
    before = client.get_run(run_id)
    ended_by = before.data.tags.get("ended_by")
    if ended_by is not None:
        client.delete_tag(run_id, "ended_by")
    return {"resumed_after": ended_by or before.info.status}


class MlflowTracker(NullTracker):
    """One MLflow run per experiment: params = flattened config, metrics per round."""

    def __init__(self, cfg: Config, tags: Optional[dict[str, Any]] = None,
                 context: Optional[TrackingContext] = None):
        import mlflow  # imported here so fcl_ray works without MLflow installed

        context = context or TrackingContext()
        self.mlflow = mlflow
        self.client_uri = resolve_uri(cfg)
        mlflow.set_tracking_uri(self.client_uri)
        name = cfg.tracking.experiment or cfg.experiment.name
        self.experiment_id = ensure_experiment(mlflow.MlflowClient(self.client_uri), name)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        all_tags = config_tags(cfg) | {k: str(v) for k, v in (tags or {}).items()}
        all_tags |= run_tags(cfg) | {k: str(v) for k, v in context.tags.items()}
        if context.parent_run_id:
            all_tags["mlflow.parentRunId"] = context.parent_run_id
        if context.run_id:   # continue the caller's run (RUNNING again): a resumed trial
            all_tags |= _reopen_tags(mlflow.MlflowClient(self.client_uri), context.run_id)
            self.run = mlflow.start_run(run_id=context.run_id, tags=all_tags)
        else:
            self.run = mlflow.start_run(run_name=run_name(cfg), tags=all_tags)
        self.run_id = context.run_id = self.run.info.run_id
        params = {k: redact(str(v))[:500] for k, v in flatten(to_dict(cfg)).items()}
        # A continued run keeps its params (MLflow refuses changing one, e.g. a new output_dir).
        mlflow.log_params({k: v for k, v in params.items() if k not in self.run.data.params})

    def log_metrics(self, metrics, step=None):
        clean = {k.replace("@", "_"): float(v) for k, v in metrics.items() if v == v}  # drop NaN
        self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path):
        self.mlflow.log_artifact(str(path))

    def set_tags(self, tags):
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def end(self, status="FINISHED"):
        # A run someone else has ended already keeps that status: a sweep's driver marks the
        # run of a trial that Tune stopped early KILLED, before the trial's own code notices.
        ended = self.mlflow.MlflowClient(self.client_uri).get_run(self.run_id).info.status
        self.mlflow.end_run(status=status if ended == "RUNNING" else ended)


# The run an output folder's experiment is tracked in, for ``--resume`` to continue it.
RUN_RECORD = "mlflow_run.json"


def remember_run(out_dir: str | Path, tracker: NullTracker) -> None:
    """Write ``<out_dir>/mlflow_run.json`` (store and run id) so that a resume of this
    output folder continues the same MLflow run. Atomic; nothing when tracking is off."""
    if tracker.run_id is None:
        return
    path = Path(out_dir) / RUN_RECORD
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"tracking_uri": redact(tracker.client_uri),
                               "run_id": tracker.run_id}) + "\n")
    os.replace(tmp, path)


def run_to_continue(cfg: Config) -> Optional[str]:
    """The MLflow run a resumed ``fcl-ray run`` continues: the one recorded in the output
    folder by :func:`remember_run`, if it is in the same store and experiment and not
    deleted; else None (a new run). A driver killed with SIGKILL never ended its run (it
    stays RUNNING forever); continuing it ends it properly and keeps one metric history
    per experiment, as a resumed sweep trial does."""
    path = Path(cfg.experiment.output_dir) / RUN_RECORD
    if not cfg.tracking.enabled or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        uri, run_id = record["tracking_uri"], record["run_id"]
    except (ValueError, KeyError, TypeError):   # unreadable: start a new run, as before
        return None
    if uri != redact(resolve_uri(cfg)):
        return None
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(cfg))
    try:
        run = client.get_run(run_id)
    except Exception:   # noqa: BLE001  (not in this store any more)
        return None
    experiment = client.get_experiment(run.info.experiment_id)
    wanted = cfg.tracking.experiment or cfg.experiment.name
    if run.info.lifecycle_stage != "active" or experiment.name != wanted:
        return None
    return run_id


def make_tracker(cfg: Config, tags: Optional[dict[str, Any]] = None,
                 context: Optional[TrackingContext] = None) -> NullTracker:
    """The run's tracker: MLflow when ``tracking.enabled``, else one that does nothing."""
    if not cfg.tracking.enabled:
        return NullTracker()
    return MlflowTracker(cfg, tags, context)


# ----------------------------------------------------------------------------- sweeps
def start_parent_run(uri: str, experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, Any]) -> str:
    """Create a sweep's parent run (left RUNNING) and return its id; trials nest under it."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, experiment)
    run = client.create_run(exp_id, run_name=run_name,
                            tags={k: str(v) for k, v in tags.items()})
    items = sorted((k, redact(str(v))[:500]) for k, v in params.items())
    for start in range(0, len(items), 100):   # MLflow takes at most 100 params per batch
        from mlflow.entities import Param
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[start:start + 100]])
    return run.info.run_id


def parent_run_status(uri: str, run_id: str) -> Optional[str]:
    """The status of an existing run, or None if the store does not know it."""
    from mlflow import MlflowClient

    try:
        return MlflowClient(uri).get_run(run_id).info.status
    except Exception:   # noqa: BLE001  (unknown run id / other store)
        return None


def reopen_run(uri: str, run_id: str) -> None:
    """Mark a parent run RUNNING again (a resumed sweep)."""
    from mlflow import MlflowClient

    MlflowClient(uri).update_run(run_id, status="RUNNING")


def finish_run(uri: str, run_id: str, status: str = "FINISHED",
               metrics: Optional[dict[str, float]] = None,
               tags: Optional[dict[str, Any]] = None,
               artifacts: tuple[str | Path, ...] = ()) -> None:
    """Log final metrics, tags and artifacts to a run by id and set its status."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for key, value in (metrics or {}).items():
        if value == value:   # skip NaN
            client.log_metric(run_id, key.replace("@", "_"), float(value))
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value))
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)

