"""The driver: start (or join) Ray, build the federation, pre-train, fine-tune, record.

The driver only sequences phases and prints/logs the small metrics the coordinator returns;
the clients' work runs in their actors, in parallel.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import ray
import torch
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fcl_ray.config import Config, dump_yaml, to_dict
from fcl_ray.dashboard import publish_run
from fcl_ray.federation.client import ClientActor
from fcl_ray.federation.coordinator import Coordinator, FederationError
from fcl_ray.methods import get_method_class
from fcl_ray.report import RESULT_COLUMNS, format_table
from fcl_ray.tracking import make_tracker, method_rows

Reporter = Callable[[dict], None]   # receives per-round and per-setting metrics (e.g. Tune)
UPPER_BOUND = "upper_bound"         # method name of the all-labels, random-init rows


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def connect_ray(cfg: Config) -> bool:
    """Join the configured cluster or start a local Ray; True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.federation.address or os.environ.get("RAY_ADDRESS")
    ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    return True


def client_cpus(cfg: Config) -> float:
    """CPUs per client actor: as configured, or 'auto' = the cluster's CPUs split evenly."""
    if cfg.federation.num_cpus_per_client != "auto":
        return cfg.federation.num_cpus_per_client
    return max(ray.cluster_resources().get("CPU", 1.0) / cfg.data.clients, 0.01)


def create_federation(cfg: Config, placement_group=None):
    """One ClientActor per client (CPU share and GPU fraction from the config) + coordinator.

    Inside a placement group (a Tune trial's), client i goes to bundle i + 1 and the
    coordinator to bundle 0, so concurrent federations never take each other's resources.
    """
    n, fed = cfg.data.clients, cfg.federation
    cpus = client_cpus(cfg)
    threads = max(1, int(cpus))
    cfg_dict = to_dict(cfg)

    def placed(bundle: int) -> dict:
        if placement_group is None:
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
                                  max_restarts=fed.max_restarts, **placed(i + 1), **pinned(i))
               .remote(cfg_dict, i, threads, fed.num_gpus_per_client) for i in range(n)]
    # The coordinator is not restarted: losing it stops the run (resume with --resume).
    coordinator = ray.remote(Coordinator).options(num_cpus=0, max_restarts=0,
                                                  **placed(0)).remote(clients, cfg_dict)
    return clients, coordinator


def _call(ref, what: str, cfg: Config):
    """ray.get on a coordinator call, turning its death into one clear FederationError."""
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
    started_ray = connect_ray(cfg)
    wall = time.perf_counter()
    clients, coordinator = [], None
    status = "FAILED"
    try:
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
                f"loss {c['loss']:.4f} {c['seconds']:.1f}s")
        for client, reason in m["dropped"].items():
            log(f"  round {r + 1}/{p.rounds} client {client} left out: {reason}")
        mb = (m["bytes_weights"] + m["bytes_features"]) / 1e6
        log(f"  round {r + 1}/{p.rounds} done in {m['round_seconds']:.1f}s with "
            f"{len(m['participants'])}/{cfg.data.clients} clients "
            f"(aggregate {m['aggregate_seconds'] * 1e3:.0f} ms, exchanged {mb:.1f} MB)")
        _append_jsonl(Path(cfg.experiment.output_dir) / "rounds.jsonl",
                      {"method": method, "fold": fold,
                       **{k: m[k] for k in ("round", "participants", "dropped", "retries",
                                            "bytes_per_client", "round_seconds")}})
        mean_loss = sum(c["loss"] for c in m["clients"]) / len(m["clients"])
        metrics = {"loss": mean_loss, "round_seconds": m["round_seconds"],
                   "bytes_weights": m["bytes_weights"], "bytes_features": m["bytes_features"],
                   "clients_participated": len(m["participants"])}
        if p.probe_every and ((r + 1) % p.probe_every == 0 or r + 1 == p.rounds):
            metrics["probe_dice"] = _call(coordinator.probe.remote(fold, cfg.finetune.n_labeled[0]),
                                          f"{phase}, probe", cfg)
            log(f"  round {r + 1}/{p.rounds} probe Dice {metrics['probe_dice']:.3f}")
        tracker.log_metrics({f"{method}/{k}": v for k, v in metrics.items()}
                            | {f"{method}/loss_client{c['client']}": c["loss"]
                               for c in m["clients"]}, step=fold * p.rounds + r)
        report({"phase": "pretrain", "method": method, "fold": fold, "round": r + 1, **metrics})
    _call(coordinator.finish_pretraining.remote(method), f"{phase}, finishing", cfg)
    _save_encoders(cfg, coordinator, method, fold)


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
    if method == UPPER_BOUND:   # random init, every training case labeled
        budgets, encoder = [cfg.data.cases_per_client - -(-cfg.data.cases_per_client
                                                          // cfg.data.folds)], "random"
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
            log(f"[{method}] {mode} fine-tuning, N={n}, fold {fold}: mean Dice {dice:.3f}")
            report({"phase": "finetune", "method": method, "finetune_mode": mode,
                    "n_labeled": n, "fold": fold, "dice_mean": dice})
            rows += [{"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold, **r}
                     for r in results]
        log(f"[{method}] {mode} fine-tuning of {len(budgets)} setting(s) took "
            f"{time.perf_counter() - start:.1f}s")
    return rows


def _log_final(results: pd.DataFrame, tracker) -> None:
    per_setting = results.groupby(["method", "finetune_mode", "n_labeled"])["dice_mean"].mean()
    tracker.log_metrics({f"dice_mean/{m}/{mode}/N{n}": v for (m, mode, n), v in per_setting.items()})
