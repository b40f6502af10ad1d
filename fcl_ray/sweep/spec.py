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

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from fcl_ray.config import RANGES, Config, ConfigError, shown
from fcl_ray.config_io import (flatten, from_dict, load_config, parse_override, read_yaml_mapping,
                               set_dotted, to_dict, unflatten)
from fcl_ray.outputs import path_problem
from fcl_ray.sweep.storage import join
from fcl_ray.tracking import tracking_uri_problem

log = logging.getLogger(__name__)

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
    def experiment_path(self) -> str:
        """Tune's experiment folder: ``<storage_path>/<name>`` (a URI stays a URI)."""
        return join(self.storage_path, self.name)


# The metrics a trial reports while it pre-trains (a probes.only base reports no others).
PRETRAINING_METRICS = ("probe_dice", "loss")


def _err(key: str, message: str, where: str = "sweep") -> ConfigError:
    return ConfigError(f"{where} key '{key}': {message}")


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(key, f"expected a number, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(key, f"expected a finite number, got {value}")
    return value


def _mapping(value: Any, key: str, what: str) -> dict:
    """``value`` if it is a mapping whose keys are names; else one ConfigError."""
    if not isinstance(value, dict):
        raise _err(key, f"expected a mapping ({what}), got {shown(value)}")
    named = [k for k in value if not isinstance(k, str)]
    if named:
        raise _err(key, f"{shown(named[0])} is not a key name (type {type(named[0]).__name__})")
    return value


def _refuse_masked_lr(space: dict[str, dict], base_cfg) -> None:
    """A searched ``pretrain.lr`` that ``pretrain.lr_per_method`` overrides for a method in
    the sweep would give that method's trials one rate, whatever the search drew: refuse it
    (the benchmark's base file carries its chosen rates in ``lr_per_method``)."""
    if "pretrain.lr" not in space:
        return
    methods_space = space.get("pretrain.methods")
    if methods_space:
        values = next(iter(methods_space.values()))
        methods = {m for v in values for m in (v if isinstance(v, list) else [v])}
    else:
        methods = set(base_cfg.pretrain.methods)
    masked = sorted(methods & set(base_cfg.pretrain.lr_per_method))
    if masked:
        raise _err("search_space.pretrain.lr",
                   f"pretrain.lr_per_method sets the rate of {', '.join(masked)}, so the "
                   f"searched pretrain.lr would not reach them; add "
                   f"'pretrain.lr_per_method={{}}' to the sweep's overrides")


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
        set_dotted({"sweep": raw}, keys, value, f"override '{text}'")   # raw is the sweep body
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
    _refuse_masked_lr(spec.search_space, base_cfg)

    search = raw.get("search") or {}
    if isinstance(search, str):
        search = {"algorithm": search}
    search = _mapping(search, "search", "algorithm, seed")
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
    sched = dict(_mapping(sched, "scheduler", "type, grace_period, ..."))
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
        raise _err("metric", f"expected a metric name (probe_dice, val_dice, dice_mean, "
                             f"loss), got {spec.metric!r}")
    spec.mode = raw.get("mode", "min" if spec.metric == "loss" else "max")
    if spec.mode not in ("min", "max"):
        raise _err("mode", f"expected 'min' or 'max', got {spec.mode!r}")
    if spec.metric == "probe_dice":
        every = spec.search_space.get("pretrain.probe_every")
        if base_cfg.pretrain.probe_every == 0 and every is None:
            raise ConfigError("sweep key 'metric': probe_dice needs pretrain.probe_every > 0 in "
                              "the base experiment (add it to 'overrides', e.g. "
                              "pretrain.probe_every=2)")

    if spec.metric == "val_dice" and base_cfg.finetune.budget != "converge":
        raise ConfigError("sweep key 'metric': val_dice (the validating patients' Dice) needs "
                          "finetune.budget=converge in the base experiment (add it to "
                          "'overrides')")
    if spec.metric == "dice_mean":   # allowed (a quick look), but not a fair choice
        log.warning("sweep metric dice_mean is the Dice on the test patients: a setting "
                    "chosen on it is chosen on the test folds; choose on val_dice "
                    "(finetune.budget=converge) or probe_dice")
    if spec.metric not in PRETRAINING_METRICS and base_cfg.probes.only:
        raise ConfigError(f"sweep key 'metric': {spec.metric} comes from fine-tuning, which "
                          f"probes.only turns off in the base experiment; use one of "
                          f"{', '.join(PRETRAINING_METRICS)}")

    for key, minimum in (("num_samples", 1), ("max_concurrent_trials", 0), ("max_failures", 0)):
        value = raw.get(key, getattr(spec, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _err(key, f"expected an integer >= {minimum}, got {value!r}")
        setattr(spec, key, value)

    res = _mapping(raw.get("resources") or {}, "resources", "cpus_per_client, ...")
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
    for k, key in (("cpus_per_client", "federation.num_cpus_per_client"),
                   ("gpus_per_client", "federation.num_gpus_per_client")):
        limit = RANGES[key]   # the same sanity limit as the base config's key
        if getattr(spec, k) > limit.high:
            raise _err(f"resources.{k}", f"must be at most {limit.high} ({limit.why}), got "
                                         f"{getattr(spec, k)}")
    if spec.coordinator_cpus <= 0:   # an empty head bundle would shift the bundle indices
        raise _err("resources.coordinator_cpus", f"must be > 0 (the trainable's bundle), got "
                                                 f"{spec.coordinator_cpus}")
    spec.strategy = res.get("strategy", "PACK")
    if spec.strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        raise _err("resources.strategy", f"expected PACK, SPREAD, STRICT_PACK or "
                                         f"STRICT_SPREAD, got {spec.strategy!r}")

    storage = raw.get("storage_path", "runs/sweeps")
    if not isinstance(storage, str) or not storage:
        raise _err("storage_path", f"expected a directory or URI, got {storage!r}")
    problem = path_problem(storage)
    if problem:
        raise _err("storage_path", problem)
    spec.storage_path = storage
    tracking = _mapping(raw.get("tracking") or {}, "tracking", "uri, experiment")
    for k in sorted(set(tracking) - {"uri", "experiment"}):
        raise _err(f"tracking.{k}", "unknown; allowed keys: uri, experiment")
    for k in ("uri", "experiment"):
        if not isinstance(tracking.get(k, ""), str):
            raise _err(f"tracking.{k}", f"expected text, got {shown(tracking[k])}")
    problem = tracking_uri_problem(tracking["uri"]) if "uri" in tracking else None
    if problem:
        raise _err("tracking.uri", f"'{tracking['uri']}' {problem}")
    spec.tracking_uri = tracking.get("uri")
    spec.tracking_experiment = tracking.get("experiment")
    return spec


def _parse_space(space: Any, base_cfg: Config) -> dict[str, dict]:
    if not space:
        raise _err("search_space", "must name at least one config key to search over, e.g. "
                                   "'pretrain.temperature: {choice: [0.05, 0.1]}'")
    space = _mapping(space, "search_space", "config keys")
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
