"""Ray Tune sweeps of whole federations, recorded as MLflow parent/child runs.

A sweep file (``experiments/sweeps/*.yaml``) names a base experiment, fixed overrides, a
search space over any flattened config key, the search algorithm, the scheduler, the metric
and its mode, ``num_samples`` and ``max_concurrent_trials``. :func:`load_sweep` validates it
(one :class:`ConfigError` line naming the bad key); :func:`run_sweep` runs it.

Each trial is one whole federation inside the trial's placement group:
bundle 0 = ``{"CPU": resources.coordinator_cpus}`` holds the trainable (the experiment
driver) and the coordinator actor (``num_cpus=0``); bundle ``i + 1`` =
``{"CPU": cpus_per_client, "GPU": gpus_per_client, **client_resources[i]}`` holds client
``i``. Tune only starts a trial when its whole group fits, so concurrent federations never
compete for CPUs/GPUs; at its first report each trial checks in the GCS actor table that its
client actors really sit in its group (``clients_in_pg``).

Early-stopping signal: the probe Dice (``pretrain.probe_every``/``probe_steps``): every k
rounds each client fine-tunes a U-Net from the current global encoder for a few steps on
its labeled volume(s) and scores Dice on a training-split validation case (never the test
fold). Contrastive loss is not comparable across temperatures, bank sizes or K (the very
keys a sweep varies), and a full fine-tune per round costs as much as the round; a few
probe steps track downstream Dice at a small fraction of a round's cost.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from fcl_ray.config import (Config, ConfigError, flatten, from_dict, load_config,
                            parse_override, read_yaml_mapping, to_dict, unflatten)

SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")
ALGORITHMS = ("random", "grid", "optuna")
SCHEDULERS = ("asha", "none")
SWEEP_KEYS = ("name", "base", "overrides", "search_space", "search", "scheduler", "metric",
              "mode", "num_samples", "max_concurrent_trials", "resources", "storage_path",
              "tracking", "max_failures")
STATE_FILE = "fcl_sweep.json"   # parent MLflow run id etc., next to Tune's experiment state


@dataclass
class SweepSpec:
    name: str
    base: Optional[str]                       # base experiment YAML (None: the defaults)
    overrides: list[str] = field(default_factory=list)
    search_space: dict[str, dict] = field(default_factory=dict)
    algorithm: str = "random"
    seed: Optional[int] = None
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha"})
    metric: str = "probe_dice"
    mode: str = "max"
    num_samples: int = 1
    max_concurrent_trials: int = 0            # 0: as many as the cluster fits
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    coordinator_cpus: float = 0.1
    strategy: str = "PACK"
    storage_path: str = "runs/sweeps"
    tracking_uri: Optional[str] = None
    tracking_experiment: Optional[str] = None
    max_failures: int = 0
    base_config: Config = field(default_factory=Config)   # base + overrides, validated

    @property
    def experiment_path(self) -> Path:
        return Path(self.storage_path).resolve() / self.name


def _err(key: str, message: str, where: str = "sweep") -> ConfigError:
    return ConfigError(f"{where} key '{key}': {message}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(key, f"expected a number, got {value!r}")
    return value


# ----------------------------------------------------------------------------- loading
def load_sweep(path: str | Path, overrides: list[str] = ()) -> SweepSpec:
    """Read and validate a sweep file. ``overrides``: ``sweep.<key>=v`` sets a sweep key
    (e.g. ``sweep.num_samples=2``); any other ``key=v`` is added to the base overrides."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file", "sweep keys")
    base_extra: list[str] = []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] != "sweep":
            base_extra.append(text)
            continue
        if len(keys) < 2:
            raise ConfigError(f"override '{text}': expected sweep.<key>=value")
        node = raw
        for k in keys[1:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': 'sweep.{k}' is not a section")
        node[keys[-1]] = value
    return parse_sweep(raw, base_dir=path.parent, extra_overrides=base_extra)


def parse_sweep(raw: dict, base_dir: Path = Path("."),
                extra_overrides: list[str] = ()) -> SweepSpec:
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise _err(unknown[0], f"unknown; allowed keys: {', '.join(SWEEP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise _err("name", f"expected a non-empty name without '/', got {name!r}")

    base = raw.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise _err("base", f"expected a path to an experiment YAML, got {base!r}")
        candidates = [Path(base), base_dir / base]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise _err("base", f"experiment file '{base}' not found (looked relative to the "
                               f"working directory and to {base_dir})")
        base = str(found)

    fixed = raw.get("overrides") or []
    if isinstance(fixed, dict):   # a mapping {key: value} is also accepted
        fixed = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}"
                 .replace("\n...", "") for k, v in fixed.items()]
    if not isinstance(fixed, list) or not all(isinstance(t, str) for t in fixed):
        raise _err("overrides", "expected a list of 'key=value' strings or a mapping")
    fixed = list(fixed) + list(extra_overrides)
    try:
        base_cfg = load_config(base, fixed)
    except ConfigError as err:
        raise ConfigError(f"sweep base experiment: {err}") from None

    spec = SweepSpec(name=name, base=base, overrides=fixed, base_config=base_cfg)
    spec.search_space = _parse_space(raw.get("search_space"), base_cfg)

    search = raw.get("search") or {}
    if isinstance(search, str):
        search = {"algorithm": search}
    if not isinstance(search, dict):
        raise _err("search", f"expected a mapping (algorithm, seed), got {search!r}")
    for k in sorted(set(search) - {"algorithm", "seed"}):
        raise _err(f"search.{k}", "unknown; allowed keys: algorithm, seed")
    spec.algorithm = search.get("algorithm", "random")
    if spec.algorithm not in ALGORITHMS:
        raise _err("search.algorithm", f"unknown '{spec.algorithm}'; allowed: "
                                       f"{', '.join(ALGORITHMS)}")
    spec.seed = search.get("seed")
    if spec.seed is not None and (isinstance(spec.seed, bool) or not isinstance(spec.seed, int)):
        raise _err("search.seed", f"expected an integer, got {spec.seed!r}")
    kinds = {k: next(iter(v)) for k, v in spec.search_space.items()}
    if spec.algorithm == "grid":
        bad = [k for k, kind in kinds.items() if kind not in ("grid", "choice")]
        if bad:
            raise _err(f"search_space.{bad[0]}", "search.algorithm=grid needs 'grid' (or "
                                                 "'choice') values, not a distribution")
        spec.search_space = {k: {"grid": next(iter(v.values()))}
                             for k, v in spec.search_space.items()}
    if spec.algorithm == "optuna":
        bad = [k for k, kind in kinds.items() if kind == "grid"]
        if bad:
            raise _err(f"search_space.{bad[0]}", "Optuna cannot take 'grid' values; use "
                                                 "'choice'")
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise _err("search.algorithm", "'optuna' needs the optuna package: "
                                           "pip install 'fcl-ray[optuna]'") from None

    sched = raw.get("scheduler", {"type": "asha"})
    if isinstance(sched, str) or sched is None:
        sched = {"type": sched or "none"}
    if not isinstance(sched, dict):
        raise _err("scheduler", f"expected a mapping (type, grace_period, ...), got {sched!r}")
    sched = dict(sched)
    sched.setdefault("type", "asha")
    if sched["type"] not in SCHEDULERS:
        raise _err("scheduler.type", f"unknown '{sched['type']}'; allowed: "
                                     f"{', '.join(SCHEDULERS)}")
    allowed = {"type"} | ({"grace_period", "reduction_factor", "max_t", "time_attr"}
                          if sched["type"] == "asha" else set())
    for k in sorted(set(sched) - allowed):
        raise _err(f"scheduler.{k}", f"unknown for scheduler '{sched['type']}'; allowed: "
                                     f"{', '.join(sorted(allowed))}")
    for k in ("grace_period", "max_t"):
        if k in sched and (not isinstance(sched[k], int) or isinstance(sched[k], bool)
                           or sched[k] < 1):
            raise _err(f"scheduler.{k}", f"expected an integer >= 1, got {sched[k]!r}")
    if "reduction_factor" in sched and (_number(sched["reduction_factor"],
                                                "scheduler.reduction_factor") <= 1):
        raise _err("scheduler.reduction_factor", f"must be > 1, got {sched['reduction_factor']}")
    spec.scheduler = sched

    spec.metric = raw.get("metric", "probe_dice")
    if not isinstance(spec.metric, str) or not spec.metric:
        raise _err("metric", f"expected a metric name (probe_dice, dice_mean, loss), got "
                             f"{spec.metric!r}")
    spec.mode = raw.get("mode", "min" if spec.metric == "loss" else "max")
    if spec.mode not in ("min", "max"):
        raise _err("mode", f"expected 'min' or 'max', got {spec.mode!r}")
    if spec.metric == "probe_dice":
        every = spec.search_space.get("pretrain.probe_every")
        if base_cfg.pretrain.probe_every == 0 and every is None:
            raise ConfigError("sweep key 'metric': probe_dice needs pretrain.probe_every > 0 in "
                              "the base experiment (add it to 'overrides', e.g. "
                              "pretrain.probe_every=2)")

    for key, minimum in (("num_samples", 1), ("max_concurrent_trials", 0), ("max_failures", 0)):
        value = raw.get(key, getattr(spec, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _err(key, f"expected an integer >= {minimum}, got {value!r}")
        setattr(spec, key, value)

    res = raw.get("resources") or {}
    if not isinstance(res, dict):
        raise _err("resources", f"expected a mapping, got {res!r}")
    allowed_res = ("cpus_per_client", "gpus_per_client", "coordinator_cpus", "strategy")
    for k in sorted(set(res) - set(allowed_res)):
        raise _err(f"resources.{k}", f"unknown; allowed keys: {', '.join(allowed_res)}")
    fed = base_cfg.federation
    spec.cpus_per_client = _number(res.get(
        "cpus_per_client", fed.num_cpus_per_client if fed.num_cpus_per_client != "auto" else 1.0),
        "resources.cpus_per_client")
    spec.gpus_per_client = _number(res.get("gpus_per_client", fed.num_gpus_per_client),
                                   "resources.gpus_per_client")
    spec.coordinator_cpus = _number(res.get("coordinator_cpus", 0.1), "resources.coordinator_cpus")
    if spec.cpus_per_client <= 0:
        raise _err("resources.cpus_per_client", f"must be > 0, got {spec.cpus_per_client}")
    if spec.gpus_per_client < 0:
        raise _err("resources.gpus_per_client", f"must be >= 0, got {spec.gpus_per_client}")
    if spec.coordinator_cpus <= 0:   # an empty head bundle would shift the bundle indices
        raise _err("resources.coordinator_cpus", f"must be > 0 (the trainable's bundle), got "
                                                 f"{spec.coordinator_cpus}")
    spec.strategy = res.get("strategy", "PACK")
    if spec.strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        raise _err("resources.strategy", f"expected PACK, SPREAD, STRICT_PACK or "
                                         f"STRICT_SPREAD, got {spec.strategy!r}")

    storage = raw.get("storage_path", "runs/sweeps")
    if not isinstance(storage, str) or not storage:
        raise _err("storage_path", f"expected a directory, got {storage!r}")
    spec.storage_path = storage
    tracking = raw.get("tracking") or {}
    if not isinstance(tracking, dict):
        raise _err("tracking", f"expected a mapping (uri, experiment), got {tracking!r}")
    for k in sorted(set(tracking) - {"uri", "experiment"}):
        raise _err(f"tracking.{k}", "unknown; allowed keys: uri, experiment")
    spec.tracking_uri = tracking.get("uri")
    spec.tracking_experiment = tracking.get("experiment")
    return spec


def _parse_space(space: Any, base_cfg: Config) -> dict[str, dict]:
    if not space:
        raise _err("search_space", "must name at least one config key to search over, e.g. "
                                   "'pretrain.temperature: {choice: [0.05, 0.1]}'")
    if not isinstance(space, dict):
        raise _err("search_space", f"expected a mapping of config keys, got {space!r}")
    known = flatten(to_dict(Config()))
    parsed: dict[str, dict] = {}
    for key, entry in space.items():
        where = f"search_space.{key}"
        if key not in known:
            close = [k for k in known if k.split(".")[-1] == str(key).split(".")[-1]]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _err(where, f"not a config key{hint}; keys look like pretrain.temperature")
        if key in ("experiment.output_dir", "experiment.name", "tracking.uri",
                   "tracking.experiment", "federation.address"):
            raise _err(where, "set per trial by the sweep; it cannot be searched")
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in SAMPLERS:
            entry = {"choice": [entry]} if not isinstance(entry, dict) else entry
            if not isinstance(entry, dict) or len(entry) != 1 \
                    or next(iter(entry)) not in SAMPLERS:
                raise _err(where, f"expected one of {{{': ..., '.join(SAMPLERS)}: ...}}, got "
                                  f"{entry!r}")
        kind, args = next(iter(entry.items()))
        if kind in ("choice", "grid"):
            if not isinstance(args, list) or not args:
                raise _err(f"{where}.{kind}", f"expected a non-empty list, got {args!r}")
            examples = args
        else:
            if not isinstance(args, list) or len(args) != (3 if kind == "quniform" else 2):
                n = "[low, high, q]" if kind == "quniform" else "[low, high]"
                raise _err(f"{where}.{kind}", f"expected {n}, got {args!r}")
            for a in args:
                _number(a, f"{where}.{kind}")
            if not args[0] < args[1]:
                raise _err(f"{where}.{kind}", f"low must be < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise _err(f"{where}.{kind}", f"low must be > 0, got {args[0]}")
            examples = [args[0], args[1] - 1] if kind == "randint" else args[:2]
        for value in examples:   # every listed value (or both bounds) must be a valid config
            try:
                apply_values(base_cfg, {key: value})
            except ConfigError as err:
                raise _err(where, f"value {value!r} is invalid: {err}") from None
        parsed[key] = {kind: args}
    return parsed


def apply_values(base: Config, values: dict[str, Any]) -> Config:
    """The base config with flattened ``values`` (a trial's sample) set, validated."""
    tree = to_dict(base)
    for key, value in unflatten(values).items():
        _merge(tree, key, value)
    return from_dict(tree)


def _merge(tree: dict, key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(tree.get(key), dict) and key != "client_resources":
        for k, v in value.items():
            _merge(tree[key], k, v)
    else:
        tree[key] = value


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
    """Actors (not dead) in a placement group: class name -> {actor id: node id}. Read from the GCS
    actor table (the data behind ``ray list actors --detail``; no dashboard needed)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    found: dict[str, dict[str, str]] = {}
    dead = gcs_pb2.ActorTableData.ActorState.Value("DEAD")
    for blob in state._connect_and_get_accessor().get_actor_table(None, None):
        actor = gcs_pb2.ActorTableData.FromString(blob)
        if actor.state != dead and actor.placement_group_id \
                and actor.placement_group_id.hex() == pg_id_hex:
            found.setdefault(actor.class_name, {})[actor.actor_id.hex()] = \
                actor.address.node_id.hex()
    return found


def trial_config(setup: dict, values: dict, trial_id: str) -> Config:
    base = from_dict(setup["base"])
    cfg = apply_values(base, values)
    tree = to_dict(cfg)
    tree["experiment"]["name"] = f"{setup['name']}-{trial_id}"
    tree["experiment"]["output_dir"] = str(Path(setup["outputs"]) / trial_id)
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

    from fcl_ray import tracking
    from fcl_ray.federation.experiment import run_experiment

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    cfg = trial_config(setup, config, trial_id)
    pg = ray.util.get_current_placement_group()
    metric = setup["metric"]
    latest: dict[str, Any] = {"trial_started_at": time.time(), "rounds_done": 0}
    checked: dict[str, Any] = {}
    run_ids: list[str] = []

    def check_placement(m: dict) -> None:
        """The trial's client actors (handles from the 'ready' report) are in its group."""
        handles = m.get("client_handles") or []
        coordinator = m.get("coordinator")
        if pg is None:
            checked.update(placement_group="none", clients_in_pg=0, coordinator_in_pg=0)
        else:
            found = actors_in_group(pg.id.hex())
            in_pg = {a for actors in found.values() for a in actors}
            nodes = {n for actors in found.values() for n in actors.values()}
            checked.update(placement_group=pg.id.hex(),
                           clients_in_pg=sum(h._actor_id.hex() in in_pg for h in handles),
                           coordinator_in_pg=int(coordinator is not None
                                                 and coordinator._actor_id.hex() in in_pg),
                           nodes_in_pg=len(nodes))
        latest.update(clients_in_pg=checked["clients_in_pg"],
                      coordinator_in_pg=checked["coordinator_in_pg"])
        if run_ids:   # the trial's MLflow run exists by now: record the check on it
            from mlflow import MlflowClient

            client = MlflowClient(setup["tracking_uri"])
            for key, value in checked.items():
                client.set_tag(run_ids[0], key, str(value))
        print(f"[{trial_id}] placement group {checked['placement_group']}: "
              f"{checked['clients_in_pg']}/{len(handles)} client actors and "
              f"{checked['coordinator_in_pg']} coordinator inside")

    def reporter(m: dict) -> None:
        if m["phase"] == "ready":
            check_placement(m)
            return
        if m["phase"] == "pretrain":
            latest["rounds_done"] += 1
            latest.update(loss=m["loss"], round=m["round"], round_seconds=m["round_seconds"])
            latest.update({k: v for k, v in m.items() if k.startswith("health/")})
            if "probe_dice" in m:
                latest["probe_dice"] = m["probe_dice"]
            due = metric in m or "probe_dice" in m
            if m.get("collapsed"):
                # A collapsed representation: report at once, as the worst score, so the
                # COLLAPSE_STOPPER ends this trial the way ASHA ends a weak one.
                latest["collapsed"] = 1.0
                latest[metric] = float("-inf") if setup.get("mode", "max") == "max" \
                    else float("inf")
                due = True
        elif m["phase"] == "finetune":
            latest["dice_mean"] = m["dice_mean"]
            latest[f"dice_mean/{m['method']}/{m['finetune_mode']}/N{m['n_labeled']}"] = \
                m["dice_mean"]
            due = True
        else:
            return
        latest["phase"] = m["phase"]
        if due and metric in latest:
            tune.report(dict(latest))

    with tracking.run_context(setup["parent_run_id"],
                              tags={"sweep": setup["name"], "trial_id": trial_id,
                                    "trial_name": ctx.get_trial_name()}) as created:
        run_ids = created   # noqa: F841  (read by check_placement through the closure)
        run_experiment(cfg, log=lambda line: print(f"[{trial_id}] {line}"), reporter=reporter,
                       placement_group=pg)
    _child_artifacts(setup, cfg, created, checked)


def _child_artifacts(setup: dict, cfg: Config, run_ids: list[str], checked: dict) -> None:
    """Per-round plot and the placement check on the trial's (ended) MLflow run."""
    if not run_ids:
        return
    uri, run_id = setup["tracking_uri"], run_ids[0]
    out = Path(cfg.experiment.output_dir)
    try:
        plot = plot_run_history(uri, run_id, cfg, out / "rounds.png")
        from mlflow import MlflowClient

        if plot is not None:
            MlflowClient(uri).log_artifact(run_id, str(plot))
    except Exception as err:   # noqa: BLE001  (plots are a nicety; never fail the trial)
        print(f"could not add plots to MLflow run {run_id}: {err}")


def plot_run_history(uri: str, run_id: str, cfg: Config, path: Path) -> Optional[Path]:
    """loss and probe Dice per round (from the MLflow run) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    panels = [("loss", "contrastive loss"), ("probe_dice", "probe Dice")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    drawn = False
    for ax, (key, title) in zip(axes, panels):
        for method in cfg.pretrain.methods:
            history = client.get_metric_history(run_id, f"{method}/{key}")
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
        plt.close(fig)
        return None
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the sweep
def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """How many [start, end] intervals overlap at most (trials running at once)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda e: (e[0], e[1]))
    best = running = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


@dataclass
class SweepOutcome:
    trials: Any                     # pandas DataFrame, one row per trial
    best: Optional[dict]
    wall_seconds: float
    max_concurrent: int
    parent_run_id: str
    tracking_uri: str
    experiment_path: Path
    errors: int


def run_sweep(spec: SweepSpec, resume: bool = False, tracking_uri: Optional[str] = None,
              log: Callable[[str], None] = print) -> SweepOutcome:
    """Run (or resume) the sweep; return its trial table and where MLflow has it."""
    import pandas as pd
    import ray
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner

    from fcl_ray import tracking

    base = spec.base_config
    uri = tracking.absolute_uri(tracking_uri or spec.tracking_uri or base.tracking.uri
                                or os.environ.get("MLFLOW_TRACKING_URI")
                                or tracking.DEFAULT_URI)
    mlflow_experiment = spec.tracking_experiment or base.tracking.experiment or spec.name
    exp_path = spec.experiment_path
    state_path = exp_path / STATE_FILE
    restoring = resume and Tuner.can_restore(str(exp_path))
    if not resume and exp_path.exists():
        raise ConfigError(f"sweep key 'name': a sweep '{spec.name}' already exists in "
                          f"{exp_path}; resume it with --resume, or choose another name "
                          f"or storage_path")
    if resume and not restoring:
        log(f"nothing to resume in {exp_path}; starting the sweep")

    started_ray = False
    if not ray.is_initialized():
        address = base.federation.address or os.environ.get("RAY_ADDRESS")
        ray.init(address=address, logging_level="WARNING")
        started_ray = True
    try:
        state = json.loads(state_path.read_text()) if restoring and state_path.is_file() else {}
        parent = state.get("parent_run_id")
        if not base.tracking.enabled:   # no MLflow (e.g. a GPU node without it): Tune only
            parent = None
        elif parent and tracking.parent_run_status(uri, parent) is not None:
            tracking.reopen_run(uri, parent)
            log(f"resuming sweep {spec.name}; MLflow parent run {parent}")
        else:
            params = {f"sweep.{k}": v for k, v in sweep_summary(spec).items()}
            params |= {k: (f"search: {spec.search_space[k]}" if k in spec.search_space else v)
                       for k, v in flatten(to_dict(base)).items()}
            parent = tracking.start_parent_run(
                uri, mlflow_experiment, spec.name, params,
                tags={"sweep": spec.name, "kind": "sweep", "metric": spec.metric,
                      "scheduler": spec.scheduler["type"], "search": spec.algorithm}
                | tracking.config_tags(base))
        exp_path.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri,
                                          "experiment": mlflow_experiment}, indent=1))
        base_tree = to_dict(base)
        for key in ("root", "metadata", "cache_dir"):   # trials do not run in this cwd
            if base_tree["data"].get(key):
                base_tree["data"][key] = str(Path(base_tree["data"][key]).resolve())
        base_tree["data"]["client_roots"] = [str(Path(p).resolve())
                                             for p in base_tree["data"]["client_roots"]]
        setup = {"base": base_tree, "name": spec.name, "outputs": str(exp_path / "outputs"),
                 "tracking_uri": uri, "tracking_experiment": mlflow_experiment,
                 "parent_run_id": parent, "metric": spec.metric, "mode": spec.mode,
                 "cpus_per_client": spec.cpus_per_client,
                 "gpus_per_client": spec.gpus_per_client}
        trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                        trial_resources(spec))
        wall = time.perf_counter()
        if restoring:
            tuner = Tuner.restore(str(exp_path), trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
        else:
            tuner = Tuner(
                trainable, param_space=param_space(spec),
                tune_config=TuneConfig(metric=spec.metric, mode=spec.mode,
                                       scheduler=make_scheduler(spec),
                                       search_alg=make_search_alg(spec),
                                       num_samples=spec.num_samples,
                                       max_concurrent_trials=spec.max_concurrent_trials or None),
                run_config=RunConfig(name=spec.name, storage_path=str(exp_path.parent),
                                     stop=stop_collapsed,
                                     failure_config=FailureConfig(max_failures=spec.max_failures),
                                     verbose=1))
        grid = tuner.fit()
        wall_seconds = time.perf_counter() - wall

        rows, intervals, errors = [], [], 0
        for result in grid:
            metrics = result.metrics or {}
            trial_id = metrics.get("trial_id") or Path(result.path).name
            row = {"trial_id": trial_id, **{k: v for k, v in (result.config or {}).items()},
                   "status": "ERROR" if result.error else "OK",
                   "iterations": metrics.get("training_iteration", 0),
                   spec.metric: metrics.get(spec.metric, float("nan")),
                   "dice_mean": metrics.get("dice_mean", float("nan")),
                   "rounds_done": metrics.get("rounds_done", 0),
                   "collapsed": metrics.get("collapsed", 0.0),
                   "mean_cosine": metrics.get("health/mean_cosine", float("nan")),
                   "clients_in_pg": metrics.get("clients_in_pg", float("nan")),
                   "error": _last_line(result.error) if result.error else ""}
            errors += bool(result.error)
            df = result.metrics_dataframe
            if df is not None and len(df) and "trial_started_at" in df:
                intervals.append((float(df["trial_started_at"].iloc[0]),
                                  float(df["timestamp"].max())))
            rows.append(row)
        trials = pd.DataFrame(rows)
        best = None
        scored = trials.dropna(subset=[spec.metric]) if len(trials) else trials
        if len(scored):
            row = scored.loc[scored[spec.metric].idxmax() if spec.mode == "max"
                             else scored[spec.metric].idxmin()]
            best = {"trial_id": row["trial_id"], spec.metric: float(row[spec.metric]),
                    "config": {k: getattr(row[k], "item", lambda v=row[k]: v)()
                               for k in spec.search_space if k in row}}
        concurrent = max_overlap(intervals)
        if parent is not None:
            _finish_parent(spec, uri, parent, trials, best, wall_seconds, concurrent, grid,
                           exp_path)
        return SweepOutcome(trials, best, wall_seconds, concurrent, parent, uri, exp_path, errors)
    finally:
        if started_ray:
            ray.shutdown()


def _last_line(error: BaseException) -> str:
    """The exception message of a trial error (Ray prefixes it with the actor's header)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__


def sweep_summary(spec: SweepSpec) -> dict[str, Any]:
    return {"name": spec.name, "base": spec.base, "overrides": spec.overrides,
            "search_space": spec.search_space, "algorithm": spec.algorithm, "seed": spec.seed,
            "scheduler": spec.scheduler, "metric": spec.metric, "mode": spec.mode,
            "num_samples": spec.num_samples,
            "max_concurrent_trials": spec.max_concurrent_trials,
            "resources": {"cpus_per_client": spec.cpus_per_client,
                          "gpus_per_client": spec.gpus_per_client,
                          "coordinator_cpus": spec.coordinator_cpus,
                          "strategy": spec.strategy},
            "storage_path": spec.storage_path, "max_failures": spec.max_failures}


def _finish_parent(spec, uri, parent, trials, best, wall_seconds, concurrent, grid,
                   exp_path: Path) -> None:
    from fcl_ray import tracking

    out = exp_path / "summary"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.yaml").write_text(yaml.safe_dump(sweep_summary(spec), sort_keys=False))
    (out / "base_config.yaml").write_text(yaml.safe_dump(to_dict(spec.base_config),
                                                         sort_keys=False))
    trials.to_csv(out / "trials.csv", index=False)
    artifacts = [out / "sweep.yaml", out / "base_config.yaml", out / "trials.csv"]
    plot = _plot_sweep(grid, spec.metric, out / f"{spec.metric}_per_trial.png")
    if plot is not None:
        artifacts.append(plot)
    plot = plot_metric_vs_hyperparameters(trials, list(spec.search_space), spec.metric,
                                          out / f"{spec.metric}_vs_hyperparameters.png")
    if plot is not None:
        artifacts.append(plot)
    metrics = {"wall_seconds": wall_seconds, "max_concurrent_trials": concurrent,
               "trials": len(trials), "trials_errored": int((trials["status"] == "ERROR").sum())
               if len(trials) else 0}
    tags: dict[str, Any] = {}
    if best is not None and best.get(spec.metric) is not None:
        metrics[f"best_{spec.metric}"] = best[spec.metric]
        tags |= {f"best.{k}": v for k, v in (best["config"] or {}).items()}
        tags["best.trial_id"] = best["trial_id"]
    _close_children(uri, parent, trials)
    tracking.finish_run(uri, parent, "FINISHED", metrics=metrics, tags=tags,
                        artifacts=tuple(artifacts))


def _close_children(uri: str, parent: str, trials) -> None:
    """Give every child run an honest end state. A trial the scheduler stopped early has its
    actors ended before run_experiment closes the run (it is left RUNNING or FAILED): mark it
    KILLED, tag ``ended_by=early_stop``; an errored trial: FAILED, ``ended_by=error``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(parent)
    errored = {r["trial_id"] for r in trials.to_dict("records") if r["status"] == "ERROR"}
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    for child in children:
        if child.info.status == "FINISHED":
            client.set_tag(child.info.run_id, "ended_by", "completed")
            continue
        failed = child.data.tags.get("trial_id") in errored
        client.set_tag(child.info.run_id, "ended_by", "error" if failed else "early_stop")
        client.set_terminated(child.info.run_id, status="FAILED" if failed else "KILLED")


def _plot_sweep(grid, metric: str, path: Path) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for result in grid:
        df = result.metrics_dataframe
        if df is None or metric not in df or not len(df):
            continue
        ax.plot(df["training_iteration"], df[metric], marker="o",
                label=str(df["trial_id"].iloc[0]) if "trial_id" in df else None)
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xlabel("report (training_iteration)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_metric_vs_hyperparameters(trials: "pd.DataFrame", keys: list[str], metric: str,
                                   path: Path) -> Optional[Path]:
    """One panel per searched key: each trial's final ``metric`` against its value (numbers
    on a log axis when they span a decade, anything else as categories)."""
    import numpy as np
    import pandas as pd

    scored = trials[trials[metric].notna() & np.isfinite(trials[metric].astype(float))] \
        if metric in trials and len(trials) else trials.iloc[0:0]
    keys = [k for k in keys if k in scored]
    if scored.empty or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = scored[key]
        numeric = pd.api.types.is_numeric_dtype(values)
        x = values if numeric else values.astype(str)
        ax.scatter(x, scored[metric], alpha=0.8)
        if numeric and values.min() > 0 and values.max() / values.min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(key)
        ax.tick_params(axis="x", labelrotation=30 if not numeric else 0, labelsize=7)
    axes[0][0].set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_outcome(spec: SweepSpec, outcome: SweepOutcome) -> str:
    shown = ["trial_id", *spec.search_space, "status", "iterations", spec.metric,
             "dice_mean", "clients_in_pg"]
    table = outcome.trials[[c for c in shown if c in outcome.trials]]
    lines = [table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    if outcome.best:
        lines.append(f"best {spec.metric} {outcome.best[spec.metric]:.4f} with "
                     f"{outcome.best['config']}")
    lines.append(f"sweep wall time {outcome.wall_seconds:.1f}s; at most "
                 f"{outcome.max_concurrent} trials ran at once; {outcome.errors} errored")
    lines.append(f"MLflow parent run {outcome.parent_run_id} at {outcome.tracking_uri}; "
                 f"Tune state in {outcome.experiment_path}")
    try:   # where to look at the parent run in the MLflow UI
        from fcl_ray.tracking import run_link_by_id
        lines += run_link_by_id(outcome.tracking_uri, outcome.parent_run_id)
    except Exception:   # noqa: BLE001  (store unreachable now: the line above still says it)
        pass
    return "\n".join(lines)
