"""One sweep trial: a whole federation inside the trial's placement group, and the Tune
objects (search space, scheduler, search algorithm, resources) built from a SweepSpec."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from fcl_ray.config import Config
from fcl_ray.core import metrics as names
from fcl_ray.core.events import Event, FederationReady, PretrainRound, SettingFinished
from fcl_ray.config_io import from_dict, to_dict
from fcl_ray.log import get_logger, progress, setup_worker_logging
from fcl_ray.sweep.spec import SweepSpec, apply_values

# ----------------------------------------------------------------------------- Tune objects
def param_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    make = {"choice": lambda a: tune.choice(a), "grid": lambda a: tune.grid_search(a),
            "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
            "randint": lambda a: tune.randint(*a), "quniform": lambda a: tune.quniform(*a)}
    return {key: make[kind](args) for key, entry in spec.search_space.items()
            for kind, args in entry.items()}


def make_scheduler(spec: SweepSpec):
    if spec.scheduler["type"] == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = spec.scheduler
    return ASHAScheduler(time_attr=s.get("time_attr", "training_iteration"),
                         max_t=s.get("max_t", 100), grace_period=s.get("grace_period", 1),
                         reduction_factor=s.get("reduction_factor", 2))


def make_search_alg(spec: SweepSpec):
    if spec.algorithm != "optuna":
        return None   # Tune's BasicVariantGenerator: grid values crossed, the rest sampled
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch(seed=spec.seed)


def trial_bundles(spec: SweepSpec, cfg: Optional[Config] = None) -> list[dict[str, float]]:
    """Bundle 0: the trainable + coordinator; bundle i+1: client i (+ its site resource)."""
    cfg = cfg or spec.base_config
    pinned = cfg.federation.client_resources or [{}] * cfg.data.clients
    client = {"CPU": spec.cpus_per_client}
    if spec.gpus_per_client:
        client["GPU"] = spec.gpus_per_client
    return [{"CPU": spec.coordinator_cpus}] + [client | dict(p) for p in pinned]


def trial_resources(spec: SweepSpec):
    """Tune resources of one trial. ``data.clients`` (and pinned sites) may be searched, so
    the group is then sized per trial from its own config. ``federation.client_labels``
    become the bundles' label selectors (client i's bundle lands on a node with its label)."""
    from ray import tune

    def factory(cfg: Config):
        labels = getattr(cfg.federation, "client_labels", None) or []
        extra = {"bundle_label_selector": [{}] + [dict(l) for l in labels]} if labels else {}
        return tune.PlacementGroupFactory(trial_bundles(spec, cfg), strategy=spec.strategy,
                                          **extra)

    searched = {"data.clients", "federation.client_resources", "federation.client_labels"}
    if not searched & set(spec.search_space):
        return factory(spec.base_config)
    return lambda config: factory(apply_values(spec.base_config, config))


# ----------------------------------------------------------------------------- the trial
def actors_in_group(pg_id_hex: str) -> dict[str, dict[str, str]]:
    """Live actors in a placement group: class name -> {actor id: node id}, from Ray's public
    state API (what ``ray list actors`` shows; served by the cluster's dashboard process)."""
    import ray
    from ray.util.state import list_actors

    found: dict[str, dict[str, str]] = {}
    for actor in list_actors(address=ray.get_runtime_context().gcs_address,
                             filters=[("placement_group_id", "=", pg_id_hex),
                                      ("state", "!=", "DEAD")],
                             detail=True, raise_on_missing_output=False):
        found.setdefault(actor.class_name, {})[actor.actor_id] = actor.node_id
    return found


def trial_config(setup: dict, values: dict, trial_id: str, output_dir: str) -> Config:
    base = from_dict(setup["base"])
    cfg = apply_values(base, values)
    tree = to_dict(cfg)
    tree["experiment"]["name"] = f"{setup['name']}-{trial_id}"
    tree["experiment"]["output_dir"] = output_dir
    # Round checkpoints: the trial's own folder (under a shared federation.checkpoint_dir, or
    # in its outputs), so that parallel trials never read each other's rounds.
    shared = tree["federation"]["checkpoint_dir"]
    tree["federation"]["checkpoint_dir"] = f"{shared.rstrip('/')}/{setup['name']}/{trial_id}" \
        if shared else str(Path(output_dir) / "checkpoints")
    tree["tracking"]["uri"] = setup["tracking_uri"]
    tree["tracking"]["experiment"] = setup["tracking_experiment"]
    # Tracking as the base config says (a sweep without MLflow runs its trials without it).
    tree["tracking"]["enabled"] = setup["parent_run_id"] is not None
    tree["federation"]["address"] = None
    tree["federation"]["num_cpus_per_client"] = setup["cpus_per_client"]
    tree["federation"]["num_gpus_per_client"] = setup["gpus_per_client"]
    return from_dict(tree)


def stop_collapsed(trial_id: str, result: dict) -> bool:
    """Tune stopper: end a trial whose representation collapsed (pretrain.collapse_guard)."""
    return bool(result.get("collapsed"))


def run_trial(config: dict, setup: dict) -> None:
    """Tune trainable: one whole federation in this trial's placement group."""
    import ray
    from ray import tune

    from fcl_ray.federation.driver import run_experiment
    from fcl_ray.tracking import TrackingContext

    setup_worker_logging(setup.get("log_level"))   # this process is Ray's: lines as the driver's
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    output_dir = str(Path(setup["outputs"]) / trial_id) if setup["outputs"] \
        else str(Path(ctx.get_trial_dir()) / "outputs")
    cfg = trial_config(setup, config, trial_id, output_dir)
    pg = ray.util.get_current_placement_group()
    metric = setup["metric"]
    # A retried or resumed trial: its last reported round goes back where the federation
    # resumes from (run_experiment(resume=True)); its MLflow run is continued.
    resumed: dict[str, Any] = {}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resumed = unpack_checkpoint(Path(folder), cfg)
        progress(f"[{trial_id}] resuming {resumed['phase']} after round {resumed['round']}")
    latest: dict[str, Any] = {"trial_started_at": time.time(),
                              "rounds_done": resumed.get("rounds_done", 0)}
    checked: dict[str, Any] = {}
    # The trial's MLflow run: a child of the sweep's parent run; run_experiment fills in its id.
    child_run = TrackingContext(parent_run_id=setup["parent_run_id"],
                                tags={"sweep": setup["name"], "trial_id": trial_id,
                                      "trial_name": ctx.get_trial_name()},
                                run_id=resumed.get("mlflow_run_id"))

    def check_placement(m: FederationReady) -> None:
        """The trial's client actors (handles from the 'ready' event) are in its group."""
        handles = m.client_handles or []
        coordinator = m.coordinator
        if pg is None:
            checked.update(placement_group="none", clients_in_pg=0, coordinator_in_pg=0)
        else:
            try:
                found = actors_in_group(pg.id.hex())
            except Exception as err:   # noqa: BLE001  (e.g. Ray started without its dashboard)
                get_logger(__name__).warning(
                    f"[{trial_id}] placement check skipped: Ray's state API did not answer "
                    f"({str(err).splitlines()[0][:200]})")
                found = {}
            in_pg = {a for actors in found.values() for a in actors}
            nodes = {n for actors in found.values() for n in actors.values()}
            checked.update(placement_group=pg.id.hex(),
                           clients_in_pg=sum(h._actor_id.hex() in in_pg for h in handles),
                           coordinator_in_pg=int(coordinator is not None
                                                 and coordinator._actor_id.hex() in in_pg),
                           nodes_in_pg=len(nodes))
        latest.update(clients_in_pg=checked["clients_in_pg"],
                      coordinator_in_pg=checked["coordinator_in_pg"])
        if child_run.run_id:   # the trial's MLflow run exists by now: record the check on it
            from mlflow import MlflowClient

            client = MlflowClient(setup["tracking_uri"])
            for key, value in checked.items():
                client.set_tag(child_run.run_id, key, str(value))
        progress(f"[{trial_id}] placement group {checked['placement_group']}: "
                 f"{checked['clients_in_pg']}/{len(handles)} client actors and "
                 f"{checked['coordinator_in_pg']} coordinator inside")

    def reporter(m: Event) -> None:
        if isinstance(m, FederationReady):
            check_placement(m)
            return
        if isinstance(m, PretrainRound):
            latest["rounds_done"] += 1
            latest.update(loss=m.loss, round=m.round, round_seconds=m.round_seconds)
            latest.update({names.health(k): v for k, v in m.health.items()})
            if m.probe_dice is not None:
                latest["probe_dice"] = m.probe_dice
            due = metric in m.metrics() or m.probe_dice is not None
            if m.collapsed:
                # A collapsed representation: report at once, as the worst score, so the
                # COLLAPSE_STOPPER ends this trial the way ASHA ends a weak one.
                latest["collapsed"] = 1.0
                latest[metric] = float("-inf") if setup.get("mode", "max") == "max" \
                    else float("inf")
                due = True
        elif isinstance(m, SettingFinished):
            latest["dice_mean"] = m.dice_mean
            latest[m.metric_name()] = m.dice_mean
            if m.val_dice is not None:   # finetune.budget=converge: the validating patients
                latest["val_dice"] = m.val_dice
            due = True
        else:
            return
        latest["phase"] = m.phase
        if child_run.run_id:   # the driver's CloseChildRuns callback ends this run by its id
            latest["mlflow_run_id"] = child_run.run_id
        if not (due and metric in latest):
            return
        folder = None
        if isinstance(m, PretrainRound):   # the round checkpoint goes with the report
            folder = pack_checkpoint(cfg, m.method, m.fold, m.round,
                                     {"mlflow_run_id": child_run.run_id,
                                      "rounds_done": latest["rounds_done"]})
        try:
            tune.report(dict(latest), checkpoint=folder and tune.Checkpoint.from_directory(folder))
        finally:   # Tune has copied it into the sweep's storage
            if folder:
                shutil.rmtree(folder, ignore_errors=True)

    run_experiment(cfg, log=lambda line: progress(f"[{trial_id}] {line}"), reporter=reporter,
                   placement_group=pg, resume=bool(resumed), tracking_context=child_run)
    _child_artifacts(setup, cfg, child_run.run_id)


# ----------------------------------------------------------------------------- trial checkpoints
TRIAL_STATE = "trial.json"


def pack_checkpoint(cfg: Config, method: str, fold: int, round_: int,
                    extra: dict[str, Any]) -> Optional[str]:
    """A new local folder with what the trial needs to go on after ``round_``: that round's
    federation checkpoint (``round/``: coordinator and every client), the results.csv of the
    settings already done, and ``trial.json`` (phase, round, ``extra``). None when the
    federation wrote no checkpoint this round (``federation.checkpoint_every``)."""
    if not cfg.federation.checkpoint_every:
        return None
    from fcl_ray.federation.checkpoint import CheckpointStore, phase_name

    store = CheckpointStore(cfg.federation.checkpoint_dir)
    phase = phase_name(method, fold)
    if store.latest(phase) != round_:
        return None
    folder = Path(tempfile.mkdtemp(prefix="fcl-trial-checkpoint-"))
    (folder / "round").mkdir()
    for path in store.fs.ls(store.round_dir(phase, round_), detail=False):
        (folder / "round" / path.rsplit("/", 1)[-1]).write_bytes(store.fs.cat_file(path))
    results = Path(cfg.experiment.output_dir) / "results.csv"
    if results.is_file():
        shutil.copy(results, folder / "results.csv")
    (folder / TRIAL_STATE).write_text(json.dumps({"phase": phase, "round": round_, **extra}))
    return str(folder)


def unpack_checkpoint(folder: Path, cfg: Config) -> dict[str, Any]:
    """Put a trial checkpoint back where ``run_experiment(resume=True)`` looks: the round into
    the trial's checkpoint store (unless the store already has that round or a later one, as
    after a retry on the same node), results.csv into the outputs. Returns trial.json."""
    from fcl_ray.federation.checkpoint import CheckpointStore

    state = json.loads((folder / TRIAL_STATE).read_text())
    store = CheckpointStore(cfg.federation.checkpoint_dir)
    phase, round_ = state["phase"], int(state["round"])
    if (store.latest(phase) or 0) < round_:
        target = store.round_dir(phase, round_)
        for file in sorted((folder / "round").iterdir()):
            store.write_bytes(f"{target}/{file.name}", file.read_bytes())
        store.mark_complete(phase, round_)
    results = Path(cfg.experiment.output_dir) / "results.csv"
    if (folder / "results.csv").is_file() and not results.is_file():
        results.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "results.csv", results)
    return state


def _child_artifacts(setup: dict, cfg: Config, run_id: Optional[str]) -> None:
    """The per-round plot on the trial's (ended) MLflow run."""
    if run_id is None:
        return
    uri = setup["tracking_uri"]
    out = Path(cfg.experiment.output_dir)
    try:
        plot = plot_run_history(uri, run_id, cfg, out / "rounds.png")
        from mlflow import MlflowClient

        if plot is not None:
            MlflowClient(uri).log_artifact(run_id, str(plot))
    except Exception as err:   # noqa: BLE001  (plots are a nicety; never fail the trial)
        get_logger(__name__).warning(f"could not add plots to MLflow run {run_id}: {err}")


def plot_run_history(uri: str, run_id: str, cfg: Config, path: Path) -> Optional[Path]:
    """loss and probe Dice per round (from the MLflow run) as one PNG."""
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    panels = [("loss", "contrastive loss"), ("probe_dice", "probe Dice")]
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, (key, title) in zip(axes, panels):
        for method in cfg.pretrain.methods:
            history = client.get_metric_history(run_id, names.of_method(method, key))
            if history:
                history.sort(key=lambda m: m.step)
                ax.plot([m.step + 1 for m in history], [m.value for m in history],
                        marker="o", label=method)
                drawn = True
        ax.set_title(title)
        ax.set_xlabel("round")
        if ax.lines:
            ax.legend()
    if not drawn:
        return None
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
