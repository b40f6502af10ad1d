"""The driver: start (or join) Ray, build the federation, pre-train, fine-tune, record.

The driver only sequences phases and prints/logs the small metrics the coordinator returns;
the clients' work runs in their actors, in parallel.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.exceptions import GetTimeoutError
from ray.util.placement_group import placement_group as new_placement_group
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fcl_ray.config import Config, ConfigError, dump_yaml, to_dict
from fcl_ray.dashboard import log_dataset_early, publish_run
from fcl_ray.federation.client import ALL_LABELED, ClientActor
from fcl_ray.federation.coordinator import Coordinator, FederationError
from fcl_ray.health import HEALTH_KEYS, is_collapsed
from fcl_ray.methods import get_method_class
from fcl_ray.report import RESULT_COLUMNS, UPPER_BOUND, format_table
from fcl_ray.tracking import make_tracker, method_rows

Reporter = Callable[[dict], None]   # receives per-round and per-setting metrics (e.g. Tune)


class CollapseError(FederationError):
    """Pre-training stopped because the representation collapsed (pretrain.collapse_guard)."""


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


class PlacementError(ConfigError):
    """The cluster cannot host the federation's clients as configured (CLI: one line, exit 2)."""


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT reached the driver. A BaseException (like KeyboardInterrupt), so no
    ``except Exception`` on the way swallows it and every ``finally`` still runs."""

    def __init__(self, signum: int, output_dir: str):
        self.signum = signum
        self.exit_code = 128 + signum      # 130 for SIGINT, 143 for SIGTERM, as shells report
        super().__init__(f"stopped by {signal.Signals(signum).name}; finished results and the "
                         f"last checkpoint are kept in {output_dir}; rerun the same command "
                         f"with --resume to continue")


_STOP: dict = {"signum": None, "output_dir": ""}   # set by the signal handler below


def _raise_if_stopped() -> None:
    if _STOP["signum"] is not None:
        raise RunInterrupted(_STOP["signum"], _STOP["output_dir"])


def stop_on_signals(output_dir: str) -> None:
    """Turn SIGTERM (``ray job stop``, Kubernetes) and SIGINT into :class:`RunInterrupted`.

    Call after ``ray.init``, which installs a SIGTERM handler that calls ``sys.exit`` in the
    middle of whatever the driver waits on (seen as exit 134 and a native stack dump). Only
    the main thread can set handlers; elsewhere (a Tune trial) the caller owns the signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    _STOP["signum"] = None

    def handler(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGINT):   # the clean-up runs once, uninterrupted
            signal.signal(sig, signal.SIG_IGN)
        # Only remembered: Python handlers also run inside Ray's C++ waits, where an exception
        # turns into a SystemError or is lost and the run goes on. The driver's wait loop
        # (_call) raises RunInterrupted within half a second instead.
        _STOP.update(signum=signum, output_dir=output_dir)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def connect_ray(cfg: Config) -> bool:
    """Join the configured cluster or start a local Ray; True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.federation.address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    return True


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _can_host(node: dict, resources: dict, labels: dict) -> bool:
    have = node.get("Resources", {})
    return all(have.get(k, 0) >= v for k, v in resources.items()) \
        and all(node.get("Labels", {}).get(k) == v for k, v in labels.items())


def _pins(cfg: Config) -> list[tuple[dict, dict]]:
    """(custom resources, node labels) client i asks for; empty = any node."""
    fed, n = cfg.federation, cfg.data.clients
    return list(zip(fed.client_resources or [{}] * n, fed.client_labels or [{}] * n))


def client_cpus(cfg: Config, nodes: Optional[list[dict]] = None) -> float:
    """CPUs per client actor: as configured, or 'auto' = what fits on the nodes that will host
    the clients. A node that can host k of the clients (their site resources / labels match;
    any node with CPUs for an unpinned client) offers each of them 1/k of its CPUs; a client
    gets the best offer among its nodes, and every client the smallest of those, so all fit
    at once. One machine: its CPUs / clients; `cluster/local.sh`, one site per node: each
    client a whole worker node."""
    if cfg.federation.num_cpus_per_client != "auto":
        return cfg.federation.num_cpus_per_client
    nodes = [n for n in (nodes if nodes is not None else _alive_nodes())
             if n.get("Resources", {}).get("CPU", 0) > 0]
    hosts = [[j for j, node in enumerate(nodes) if _can_host(node, res, labels)]
             for res, labels in _pins(cfg)]
    if not nodes or not all(hosts):
        return 1.0   # nothing can host some client: the placement check names it
    load = [sum(j in h for h in hosts) for j in range(len(nodes))]
    share = min(max(nodes[j]["Resources"]["CPU"] / load[j] for j in h) for h in hosts)
    return max(math.floor(share * 100) / 100, 0.01)   # rounded down: the shares must fit


def client_bundles(cfg: Config, cpus: float) -> list[dict]:
    """One placement-group bundle per client: its CPUs, GPU share and site resources."""
    gpu = {"GPU": cfg.federation.num_gpus_per_client} if cfg.federation.num_gpus_per_client else {}
    return [{"CPU": cpus, **gpu, **res} for res, _ in _pins(cfg)]


def _describe_nodes(nodes: list[dict]) -> str:
    """The alive nodes' CPUs, GPUs, custom resources and labels, in one line."""
    hidden = ("memory", "object_store_memory", "node:")
    parts = []
    for node in nodes:
        res = {k: (int(v) if float(v).is_integer() else v) for k, v in node["Resources"].items()
               if not k.startswith(hidden)}
        labels = {k: v for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")}
        parts.append(f"{node.get('NodeManagerAddress', '?')} {res}"
                     + (f" labels {labels}" if labels else ""))
    return f"{len(nodes)} node(s): " + "; ".join(parts)


def reserve_federation(cfg: Config):
    """Reserve every client's resources as one placement group and wait until it is placed.

    Nothing starts until the whole federation fits; if the cluster cannot place it within
    ``federation.placement_timeout_s`` (no node has the resources, or they stay taken) this
    raises :class:`PlacementError` naming what was asked and what the cluster has, instead of
    waiting forever behind autoscaler warnings."""
    fed = cfg.federation
    cpus = client_cpus(cfg)
    bundles = client_bundles(cfg, cpus)
    labels = [dict(lab) for _, lab in _pins(cfg)]
    extra = {"bundle_label_selector": labels} if any(labels) else {}
    group = new_placement_group(bundles, strategy="PACK", name=f"fcl-{cfg.experiment.name}",
                                **extra)
    try:
        ray.get(group.ready(), timeout=fed.placement_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        asked = f"{len(bundles)} clients x {bundles[0]}" if all(b == bundles[0] for b in bundles) \
            else ", ".join(map(str, bundles))
        key = "federation.num_cpus_per_client" if fed.num_cpus_per_client != "auto" \
            else "federation.client_resources / client_labels"
        raise PlacementError(
            f"{key}: the cluster could not place {asked}"
            + (f" with labels {labels}" if any(labels) else "")
            + f" within federation.placement_timeout_s={fed.placement_timeout_s:g}s; "
            f"the cluster has {_describe_nodes(_alive_nodes())}") from None
    return group


def create_federation(cfg: Config, placement_group=None, first_client_bundle: int = 1):
    """One ClientActor per client (CPU share and GPU fraction from the config) + coordinator.

    Inside a placement group, client i goes to bundle ``first_client_bundle + i``. In a Tune
    trial's group (first_client_bundle=1) the coordinator shares bundle 0 with the trainable,
    so concurrent federations never take each other's resources; in the federation's own
    group (:func:`reserve_federation`, first_client_bundle=0) it needs no bundle (0 CPUs).
    """
    n, fed = cfg.data.clients, cfg.federation
    if placement_group is not None and fed.num_cpus_per_client == "auto":
        cpus = placement_group.bundle_specs[first_client_bundle].get("CPU", 1.0)
    else:
        cpus = client_cpus(cfg)
    threads = max(1, int(cpus))
    cfg_dict = to_dict(cfg)

    def placed(bundle: int) -> dict:
        if placement_group is None or bundle < 0:
            return {}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=bundle)}

    def pinned(i: int) -> dict:   # site resources keep a site's data on its own node
        opts = {"resources": fed.client_resources[i]} if fed.client_resources else {}
        if fed.client_labels and placement_group is None:  # in a group: its bundle's selector
            opts["label_selector"] = fed.client_labels[i]
        return opts

    client_cls = ray.remote(ClientActor)
    # A dead client is restarted by Ray (its __init__ reloads its own data); the coordinator
    # then rebuilds its method and it rejoins from the global weights.
    clients = [client_cls.options(num_cpus=cpus, num_gpus=fed.num_gpus_per_client,
                                  max_concurrency=cfg.finetune.concurrency,
                                  max_restarts=fed.max_restarts,
                                  **placed(first_client_bundle + i), **pinned(i))
               .remote(cfg_dict, i, threads, fed.num_gpus_per_client) for i in range(n)]
    # The coordinator is not restarted: losing it stops the run (resume with --resume).
    coordinator = ray.remote(Coordinator).options(num_cpus=0, max_restarts=0,
                                                  **placed(first_client_bundle - 1)
                                                  ).remote(clients, cfg_dict)
    return clients, coordinator


def _call(ref, what: str, cfg: Config):
    """ray.get on a coordinator call, turning its death into one clear FederationError.
    Waits in short slices so a SIGTERM/SIGINT stops the driver within a second."""
    while not ray.wait([ref], timeout=0.5)[0]:
        _raise_if_stopped()
    _raise_if_stopped()
    try:
        return ray.get(ref)
    except RayTaskError as err:   # raised inside the coordinator (checked first: such errors
        if isinstance(err.cause, FederationError):    # can also be RayActorError instances)
            raise FederationError(f"{what}: {err.cause}") from None
        raise
    except RayActorError:
        raise FederationError(
            f"the coordinator died during {what}; finished results and the last checkpoint "
            f"are in {cfg.experiment.output_dir}; rerun the same command with --resume") from None


def run_experiment(cfg: Config, log: Callable[[str], None] = print,
                   reporter: Optional[Reporter] = None, placement_group=None,
                   resume: bool = False) -> pd.DataFrame:
    """Run the whole experiment of ``cfg``; return (and write) the per-client results.

    ``reporter`` (optional) is called with a dict when the federation is ready, after every
    pre-training round and after every fine-tuning setting; Ray Tune's trainable uses it.
    ``resume`` keeps the finished (fold, method) results of ``<output_dir>/results.csv`` and
    continues an interrupted pre-training from its last complete checkpoint.
    """
    report = reporter or (lambda metrics: None)
    out_dir = Path(cfg.experiment.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    results_path = out_dir / "results.csv"
    rows = _previous_rows(results_path) if resume else []
    done = {(int(r["fold"]), r["method"]) for r in rows}
    given = None
    if cfg.finetune.encoder:   # fine-tune from an MLflow model; a bad URI stops here (exit 2)
        from fcl_ray.encoders import load_encoder
        given = load_encoder(cfg)
    tracker = make_tracker(cfg, tags={"methods": ",".join(cfg.pretrain.methods),
                                      "finetune_modes": ",".join(cfg.finetune.modes),
                                      "n_labeled": ",".join(map(str, cfg.finetune.n_labeled)),
                                      "seed": cfg.experiment.seed, "resumed": resume})
    tracker.log_artifact(out_dir / "config.yaml")
    log_dataset_early(cfg, tracker, log)
    started_ray = connect_ray(cfg)
    wall = time.perf_counter()
    clients, coordinator, own_group = [], None, None
    status = "FAILED"
    try:
        if placement_group is None:   # not in a Tune trial's group: reserve our own first
            own_group = reserve_federation(cfg)
            clients, coordinator = create_federation(cfg, own_group, first_client_bundle=0)
        else:
            clients, coordinator = create_federation(cfg, placement_group)
        infos = ray.get([c.info.remote() for c in clients])
        for info in infos:
            log(f"client {info['client']}: {info['cases']} cases, {info['slices']} slices "
                f"on {info['device']}")
        log(f"federation ready in {time.perf_counter() - wall:.1f}s")
        report({"phase": "ready", "clients": infos, "client_handles": clients,
                "coordinator": coordinator})
        if given is not None:
            ray.get(coordinator.use_encoder.remote(given.label, given.state))
            log(f"[{given.label}] fine-tuning from {given.uri}; no pre-training")
        methods = method_rows(cfg) + ([UPPER_BOUND] if cfg.finetune.upper_bound else [])
        no_pretraining = {UPPER_BOUND} | ({given.label} if given else set())
        for fold in cfg.finetune.folds:
            for method in methods:
                if (fold, method) in done:
                    log(f"[{method}] fold {fold}: results already in {results_path}, skipped")
                    continue
                if method not in no_pretraining and get_method_class(method) is not None:
                    _pretrain(cfg, coordinator, method, fold, tracker, log, report, resume)
                rows += _finetune_grid(cfg, coordinator, method, fold, log, report)
                write_csv_atomic(pd.DataFrame(rows), results_path)   # keep what is done
        results = pd.DataFrame(rows)
        extra = [c for c in results.columns if c not in RESULT_COLUMNS]
        results = results[[c for c in RESULT_COLUMNS if c in results.columns] + extra]
        write_csv_atomic(results, results_path)
        _log_final(results, tracker)
        for artifact in [results_path, out_dir / "rounds.jsonl", *sorted(out_dir.glob("encoders/*"))]:
            if artifact.exists():
                tracker.log_artifact(artifact)
        log(f"\nDice on held-out volumes (mean ± std over {cfg.data.clients} clients), "
            f"written to {results_path}:")
        log(format_table(results))
        log(f"wall time {time.perf_counter() - wall:.1f}s")
        publish_run(cfg, tracker, results, out_dir, log)   # tables, models, data; the link
        status = "FINISHED"
        return results
    finally:
        for actor in clients + ([coordinator] if coordinator else []):
            ray.kill(actor)
        if own_group is not None:
            remove_placement_group(own_group)
        tracker.end(status)
        if started_ray:
            ray.shutdown()


def _previous_rows(path: Path) -> list[dict]:
    """Rows of an earlier, interrupted run of the same experiment (for --resume)."""
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _pretrain(cfg, coordinator, method, fold, tracker, log, report, resume) -> None:
    p = cfg.pretrain
    phase = f"pre-training {method} (fold {fold})"
    info = _call(coordinator.start_pretraining.remote(method, fold, resume), phase, cfg)
    first = info["start_round"]
    log(f"[{method}] pre-training fold {fold}: {cfg.data.clients} clients, "
        f"{info['slices']} slices, {p.rounds} rounds x {p.local_steps} steps"
        + (f"; resumed after round {first}" if first else ""))
    for r in range(first, p.rounds):
        m = _call(coordinator.pretrain_round.remote(), f"{phase}, round {r + 1}", cfg)
        for c in m["clients"]:
            log(f"  round {r + 1}/{p.rounds} client {c['client']} "
                f"loss {c['loss']:.4f} {c['seconds']:.1f}s" + _health_text(c))
        for client, reason in m["dropped"].items():
            log(f"  round {r + 1}/{p.rounds} client {client} left out: {reason}")
        mb = (m["bytes_weights"] + m["bytes_features"]) / 1e6
        log(f"  round {r + 1}/{p.rounds} done in {m['round_seconds']:.1f}s with "
            f"{len(m['participants'])}/{cfg.data.clients} clients "
            f"(aggregate {m['aggregate_seconds'] * 1e3:.0f} ms, exchanged {mb:.1f} MB)")
        health = mean_health(m["clients"])
        _append_jsonl(Path(cfg.experiment.output_dir) / "rounds.jsonl",
                      {"method": method, "fold": fold,
                       **{k: m[k] for k in ("round", "participants", "dropped", "retries",
                                            "bytes_per_client", "round_seconds")},
                       "health": {str(c["client"]): client_health(c) for c in m["clients"]}})
        mean_loss = sum(c["loss"] for c in m["clients"]) / len(m["clients"])
        metrics = {"loss": mean_loss, "round_seconds": m["round_seconds"],
                   "bytes_weights": m["bytes_weights"], "bytes_features": m["bytes_features"],
                   "clients_participated": len(m["participants"]),
                   **{f"health/{k}": v for k, v in health.items()}}
        collapsed = bool(health) and is_collapsed(health, p.collapse_cosine, p.collapse_rank)
        if health:
            metrics["collapsed"] = float(collapsed)
            log(f"  round {r + 1}/{p.rounds} health (mean over clients):" + _health_text(
                {f"health/{k}": v for k, v in health.items()}) + ("  COLLAPSED" if collapsed else ""))
        if p.probe_every and ((r + 1) % p.probe_every == 0 or r + 1 == p.rounds):
            metrics["probe_dice"] = _call(coordinator.probe.remote(fold, cfg.finetune.n_labeled[0]),
                                          f"{phase}, probe", cfg)
            log(f"  round {r + 1}/{p.rounds} probe Dice {metrics['probe_dice']:.3f}")
        tracker.log_metrics({f"{method}/{k}": v for k, v in metrics.items()}
                            | {f"{method}/loss_client{c['client']}": c["loss"]
                               for c in m["clients"]}
                            | {f"{method}/health/{k}_client{c['client']}": v
                               for c in m["clients"] for k, v in client_health(c).items()},
                            step=fold * p.rounds + r)
        report({"phase": "pretrain", "method": method, "fold": fold, "round": r + 1, **metrics})
        if collapsed:
            _collapse_guard(cfg, method, fold, r + 1, health, log)
    _call(coordinator.finish_pretraining.remote(method), f"{phase}, finishing", cfg)
    _save_encoders(cfg, coordinator, method, fold)


def client_health(client_metrics: dict) -> dict[str, float]:
    """The health figures of one client's round metrics: {'mean_cosine': .., ...}."""
    return {k.split("/", 1)[1]: v for k, v in client_metrics.items() if k.startswith("health/")}


def mean_health(clients: list[dict]) -> dict[str, float]:
    """Each health figure averaged over the clients that reported it ({} if none did)."""
    per_client = [client_health(c) for c in clients]
    means = {}
    for key in HEALTH_KEYS:
        values = [h[key] for h in per_client if key in h and np.isfinite(h[key])]
        if any(key in h for h in per_client):   # NaN: reported, but by no client finitely
            means[key] = float(np.mean(values)) if values else float("nan")
    return means


def _health_text(metrics: dict) -> str:
    short = {"mean_cosine": "cos", "effective_rank": "rank", "live_units": "live",
             "partition_gap": "gap"}
    return "".join(f" {short[k]} {metrics[f'health/{k}']:.3f}" for k in short
                   if f"health/{k}" in metrics)


def _collapse_guard(cfg, method: str, fold: int, round_: int, health: dict, log) -> None:
    """``pretrain.collapse_guard``: warn (one line) or stop the run (CollapseError)."""
    p = cfg.pretrain
    line = (f"{method} fold {fold}: embeddings collapsed at round {round_} (mean cosine "
            f"{health['mean_cosine']:.3f} > {p.collapse_cosine} or effective rank "
            f"{health['effective_rank']:.2f} < {p.collapse_rank}); its Dice says little "
            f"about the method")
    if p.collapse_guard == "stop":
        raise CollapseError(f"{line}; stopped (pretrain.collapse_guard=stop)")
    log(f"WARNING: {line}")


def _save_encoders(cfg, coordinator, method, fold) -> None:
    """The final encoder(s) of a pre-training phase, as a torch file in <output_dir>/encoders."""
    states = _call(coordinator.encoder_states.remote(method), "saving encoders", cfg)
    path = Path(cfg.experiment.output_dir) / "encoders" / f"{method}-fold{fold}.pt"
    path.parent.mkdir(exist_ok=True)
    tensors = [{k: torch.from_numpy(np.array(v)) for k, v in s.items()} for s in states]
    tmp = path.with_suffix(".tmp")
    torch.save(tensors[0] if len(tensors) == 1 else {f"client{i}": t for i, t in enumerate(tensors)},
               tmp)
    os.replace(tmp, path)


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _finetune_grid(cfg, coordinator, method, fold, log, report) -> list[dict]:
    """All fine-tuning settings (modes x N) of one method and fold.

    Local-mode settings are submitted together, so each client actor works through its
    queue without waiting for the driver (and runs ``finetune.concurrency`` at once)."""
    ft = cfg.finetune
    budgets = ft.n_labeled
    encoder = method
    if method == UPPER_BOUND:   # random init, every labeled training patient of each client
        budgets, encoder = [ALL_LABELED], "random"
    rows: list[dict] = []
    for mode in ft.modes:
        start = time.perf_counter()
        if mode == "local":
            per_setting = _call(coordinator.finetune_local_grid.remote(encoder, fold, budgets),
                                f"{method} local fine-tuning", cfg)
        else:
            per_setting = [_call(coordinator.finetune_federated.remote(encoder, fold, n, ft.rounds),
                                 f"{method} federated fine-tuning", cfg) for n in budgets]
        for n, results in zip(budgets, per_setting):
            dice = sum(r["dice_mean"] for r in results) / len(results)
            label = "all" if n == ALL_LABELED else n
            log(f"[{method}] {mode} fine-tuning, N={label}, fold {fold}: mean Dice {dice:.3f}")
            report({"phase": "finetune", "method": method, "finetune_mode": mode,
                    "n_labeled": n, "fold": fold, "dice_mean": dice})
            # A client's row carries its own N when the budget was "all" (it may differ).
            rows += [{"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold,
                      "seed": cfg.experiment.seed, **r} for r in results]
        log(f"[{method}] {mode} fine-tuning of {len(budgets)} setting(s) took "
            f"{time.perf_counter() - start:.1f}s")
    return rows


def _log_final(results: pd.DataFrame, tracker) -> None:
    per_setting = results.groupby(["method", "finetune_mode", "n_labeled"])["dice_mean"].mean()
    tracker.log_metrics({f"dice_mean/{m}/{mode}/N{n}": v for (m, mode, n), v in per_setting.items()})
