"""The driver: start (or join) Ray, build the federation, pre-train, fine-tune, record.

The driver only sequences phases and prints/logs the small metrics the coordinator returns;
the clients' work runs in their actors, in parallel.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from fcl_ray.config import RANDOM_INIT, Config
from fcl_ray.core import metrics as names
from fcl_ray.core.events import (FederationReady, PretrainRound, Reporter, RoundReport,
                                 SettingFinished)
from fcl_ray.config_io import dump_yaml
from fcl_ray.dashboard import log_dataset_early, publish_run
from fcl_ray.protocol.messages import ALL_LABELED
from fcl_ray.federation.cluster import (as_finished, await_coordinator, gather,
                                        running_federation)
from fcl_ray.federation.coordinator import FederationError
from fcl_ray.log import Eta, get_logger, progress
from fcl_ray.machine import MACHINE_FILE, record_start, summary
from fcl_ray.methods.health import HEALTH_KEYS, is_collapsed
from fcl_ray.methods import SUPERVISED_ENCODER, has_pretraining
from fcl_ray.data.labels import agreed_classes
from fcl_ray.privacy.budget import SUMMARY_FILE as PRIVACY_SUMMARY, PhaseBudget
from fcl_ray.results import PROBE_COLUMNS, UPPER_BOUND, result_columns
from fcl_ray.tracking import (TrackingContext, make_tracker, method_rows,
                              remember_run, run_to_continue)


class CollapseError(FederationError):
    """Pre-training stopped because the representation collapsed (pretrain.collapse_guard)."""


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write to a temporary file, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def run_experiment(cfg: Config, log: Callable[[str], None] = progress,
                   reporter: Optional[Reporter] = None, placement_group=None,
                   resume: bool = False,
                   tracking_context: Optional[TrackingContext] = None) -> pd.DataFrame:
    """Run the whole experiment of ``cfg``; return (and write) the per-client results.

    ``log`` gets the progress lines (default: info lines on stderr, ``fcl_ray/log.py``).
    ``reporter`` (optional) is called with an event (:mod:`fcl_ray.core.events`) when the
    federation is ready, after every pre-training round and after every fine-tuning setting;
    Ray Tune's trainable uses it.
    ``resume`` keeps the finished settings (fold, method, mode, N) of
    ``<output_dir>/results.csv``, runs the others (also those a grown grid adds) and
    continues an interrupted pre-training from its last complete checkpoint.
    ``tracking_context`` says where the MLflow run belongs (a sweep's parent run) and receives
    its id; None: a standalone run.
    """
    report = reporter or (lambda metrics: None)
    out_dir = Path(cfg.experiment.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(dump_yaml(cfg))
    results_path = out_dir / "results.csv"
    rows = previous_rows(results_path) if resume else []
    done = finished_settings(rows)
    probe_rows = previous_rows(out_dir / "probes.csv") if resume else []
    if not resume:   # a fresh run: no probe rows of an earlier run beside its results
        (out_dir / "probes.csv").unlink(missing_ok=True)
        (out_dir / PRIVACY_SUMMARY).unlink(missing_ok=True)
    given = control = None
    if cfg.finetune.encoder:   # fine-tune from an MLflow model; a bad URI stops here (exit 2)
        from fcl_ray.encoders import load_encoder
        given = load_encoder(cfg)
    if cfg.control.encoder and SUPERVISED_ENCODER in cfg.pretrain.methods:   # the same
        from fcl_ray.encoders import load_encoder
        control = load_encoder(cfg, "control.encoder")
    tracking_context = tracking_context or TrackingContext()
    if resume and tracking_context.run_id is None and tracking_context.parent_run_id is None:
        # A standalone run resumed: continue its MLflow run (left RUNNING by a SIGKILL, or
        # FAILED/KILLED), so the rounds before and after the interruption are one history.
        tracking_context.run_id = run_to_continue(cfg)
    tracker = make_tracker(cfg, tags={"methods": ",".join(cfg.pretrain.methods),
                                      "finetune_modes": ",".join(cfg.finetune.modes),
                                      "n_labeled": ",".join(map(str, cfg.finetune.n_labeled)),
                                      "seed": cfg.experiment.seed, "resumed": resume},
                           context=tracking_context)
    remember_run(out_dir, tracker)
    tracker.log_artifact(out_dir / "config.yaml")
    log_dataset_early(cfg, tracker, log)
    wall = time.perf_counter()
    status = "FAILED"
    try:
        with running_federation(cfg, placement_group) as (clients, coordinator):
            run = Run(cfg, clients, coordinator, tracker, log, report, resume, wall, given,
                      control)
            results = _run_grid(run, done, rows, probe_rows)
            status = "FINISHED"
            return results
    except BaseException as err:
        if not isinstance(err, Exception):
            # Stopped, not broken: Ctrl-C / SIGTERM (RunInterrupted), or Ray Tune ending this
            # trial (tune.report raises SystemExit(0) once Tune has asked the trial to stop).
            # FAILED here raced the sweep driver's KILLED for the same run and often won.
            status = "KILLED"
        raise
    finally:
        tracker.end(status)


@dataclass
class Run:
    """What every phase of one run needs: the config, the federation's handles (client
    actors, coordinator), where metrics and progress go, whether it resumes, and the
    encoders given from MLflow (``finetune.encoder``: ``given``; ``control.encoder``:
    ``control``; None: none)."""
    cfg: Config
    clients: list
    coordinator: object
    tracker: object
    log: Callable[[str], None]
    report: Reporter
    resume: bool = False
    wall: float = field(default_factory=time.perf_counter)   # when the run started
    given: Optional[object] = None
    control: Optional[object] = None


def _record_machines(run: Run, infos: list[dict]) -> None:
    """Where the clients compute: machine.json in the run folder (every start appended),
    an MLflow artifact and tags, one progress line; a warning when a resume moved machines."""
    out_dir = Path(run.cfg.experiment.output_dir)
    groups, warning = record_start(out_dir, {i["client"]: i["machine"] for i in infos},
                                   run.resume)
    run.log(summary(groups))
    if warning:
        get_logger(__name__).warning(warning)
    run.tracker.set_tags({"machine.setups": len(groups), "machine.cpu": groups[0]["cpu"],
                          "machine.cpu_capability": groups[0]["cpu_capability"],
                          "machine.torch": groups[0]["torch"]})
    run.tracker.log_artifact(out_dir / MACHINE_FILE)


def _run_grid(run: Run, done: set, rows: list[dict], probe_rows: list[dict]) -> pd.DataFrame:
    """Every fold: each method is pre-trained (if it needs it), its encoder probed (if
    ``probes.enabled``) and fine-tuned federated; then the local settings of all its methods
    run as one queue per client (largest first), so no client waits for a method's slowest
    client before starting the next. results.csv (and probes.csv) is written after each
    phase, so an interrupted run keeps what is done; ``done`` holds the (fold, method, mode)
    already in it, ``probe_rows`` the probe rows. The positive control's encoder
    (``run.control``: from ``control.encoder``, else trained here) is obtained once, before
    the first fold."""
    cfg, coordinator, tracker, log = run.cfg, run.coordinator, run.tracker, run.log
    given, control = run.given, run.control
    out_dir = Path(cfg.experiment.output_dir)
    results_path = out_dir / "results.csv"
    infos = gather([c.info.remote() for c in run.clients])
    classes = agreed_classes([info["classes"] for info in infos])   # the Dice columns
    for info in infos:
        log(f"client {info['client']}: {info['patients']} patients, {info['volumes']} volumes, "
            f"{info['slices']} slices on {info['device']}")
    log(f"segmenting {', '.join(classes)} (labels 1-{len(classes)})")
    _record_machines(run, infos)
    log(f"federation ready in {time.perf_counter() - run.wall:.1f}s")
    run.report(FederationReady(clients=infos, client_handles=run.clients, coordinator=coordinator))
    if given is not None:
        gather([coordinator.use_encoder.remote(given.label, given.state)])
        log(f"[{given.label}] fine-tuning from {given.uri}; no pre-training")
    methods = method_rows(cfg) + ([UPPER_BOUND] if cfg.finetune.upper_bound else [])
    no_pretraining = {UPPER_BOUND} | ({given.label} if given else set())
    modes = cfg.finetune.modes
    if SUPERVISED_ENCODER in methods and any(
            settings_to_run(cfg, done, fold, SUPERVISED_ENCODER).values()
            for fold in cfg.finetune.folds):
        if control is not None:
            state = control.state
            log(f"[{SUPERVISED_ENCODER}] the positive control's encoder from {control.uri}")
        else:
            from fcl_ray.federation.control import supervised_encoder
            state = supervised_encoder(cfg, run.clients[0], tracker, log, run.resume)
        gather([coordinator.use_encoder.remote(SUPERVISED_ENCODER, state)])
    eta = Eta(len(cfg.finetune.folds) * len(methods) * len(modes))
    probe = _prober(run, methods, given, probe_rows)
    for fold in cfg.finetune.folds:
        local_queue = []
        if RANDOM_INIT not in methods:   # random init is always there to be probed
            probe(RANDOM_INIT, fold)
        for method in methods:
            todo = settings_to_run(cfg, done, fold, method)   # {mode: [N, ...]}
            if not any(todo.values()):
                log(f"[{method}] fold {fold}: results already in {results_path}, skipped")
                eta.step(len(modes))
                continue
            _log_kept_settings(run, method, fold, todo)
            if method not in no_pretraining and has_pretraining(method):
                _pretrain(run, method, fold)
            probe(method, fold)
            if cfg.probes.only:   # pre-train and probe: no fine-tuning, no results.csv
                continue
            if todo.get("federated"):
                rows += _finetune_federated(run, method, fold, eta, todo["federated"])
                write_csv_atomic(pd.DataFrame(rows), results_path)   # keep what is done
            if todo.get("local"):
                local_queue += [(method, n) for n in todo["local"]]
        if local_queue:
            rows += _finetune_local(run, local_queue, fold, eta)
            write_csv_atomic(pd.DataFrame(rows), results_path)
    if cfg.probes.only:
        return _probes_only_done(run)
    results = _in_grid_order(pd.DataFrame(rows), methods, cfg.finetune.modes)
    leading = result_columns(classes)
    extra = [c for c in results.columns if c not in leading]
    results = results[[c for c in leading if c in results.columns] + extra]
    write_csv_atomic(results, results_path)
    _log_final(results, tracker)
    _log_run_files(out_dir, tracker)
    log(f"results written to {results_path}")
    log(f"wall time {time.perf_counter() - run.wall:.1f}s")
    publish_run(cfg, tracker, results, out_dir, log)   # tables, models, data; the link
    return results


def _log_run_files(out_dir: Path, tracker) -> None:
    """Put the run's files that exist (results, probes, rounds, privacy, encoders) on its
    MLflow run."""
    for artifact in [out_dir / "results.csv", out_dir / "probes.csv", out_dir / "rounds.jsonl",
                     out_dir / PRIVACY_SUMMARY, *sorted(out_dir.glob("encoders/*"))]:
        if artifact.exists():
            tracker.log_artifact(artifact)


def _probes_only_done(run: Run) -> pd.DataFrame:
    """The end of a ``probes.only`` run: its files on the MLflow run, and no result rows."""
    out_dir = Path(run.cfg.experiment.output_dir)
    _log_run_files(out_dir, run.tracker)
    run.log(f"probes written to {out_dir / 'probes.csv'} (probes.only: nothing fine-tuned)")
    run.log(f"wall time {time.perf_counter() - run.wall:.1f}s")
    return pd.DataFrame()


def _prober(run: Run, methods: list[str], given, probe_rows: list[dict]
            ) -> Callable[[str, int], None]:
    """``probe(method, fold)``: with ``probes.enabled``, probe that encoder unless it is not a
    target or probes.csv already has it, then rewrite probes.csv (``probe_rows`` grows)."""
    cfg, coordinator, tracker, log = run.cfg, run.coordinator, run.tracker, run.log
    if not cfg.probes.enabled:
        return lambda method, fold: None
    # Here, not at the top: the probes' MONAI loss is loaded only by runs that probe.
    from fcl_ray.federation.probing import log_probes, probe_encoder, probe_targets

    targets = probe_targets(cfg, methods, given.label if given else None)
    path = Path(cfg.experiment.output_dir) / "probes.csv"

    def probe(method: str, fold: int) -> None:
        if method not in targets:
            return
        if any(int(r["fold"]) == fold and r["method"] == method for r in probe_rows):
            log(f"[{method}] fold {fold}: probes already in {path}, skipped")
            return
        new = probe_encoder(cfg, coordinator, method, fold)
        log_probes(new, method, fold, tracker, log)
        probe_rows.extend(new)
        write_csv_atomic(pd.DataFrame(probe_rows, columns=PROBE_COLUMNS), path)

    return probe


def _in_grid_order(results: pd.DataFrame, methods: list[str], modes: list[str]) -> pd.DataFrame:
    """Rows by fold, method and mode as configured, then N and client (the local settings
    finish after the federated ones, since they run as one queue per fold)."""
    rank = {"method": {m: i for i, m in enumerate(methods)},
            "finetune_mode": {m: i for i, m in enumerate(modes)}}
    by = [c for c in ("fold", "method", "finetune_mode", "n_labeled", "client")
          if c in results.columns]

    def key(column: pd.Series) -> pd.Series:   # configured order; others (older rows) last
        return column.map(rank[column.name]) if column.name in rank else column

    return results.sort_values(by, key=key, kind="stable").reset_index(drop=True)


def finished_settings(rows: list[dict]) -> set[tuple[int, str, str, int]]:
    """(fold, method, mode, N) of every setting with rows in ``rows`` (a results.csv's). The
    upper bound's rows carry each client's own N, so its setting is keyed ALL_LABELED."""
    return {(int(r["fold"]), r["method"], r["finetune_mode"],
             ALL_LABELED if r["method"] == UPPER_BOUND else int(r["n_labeled"])) for r in rows}


def settings_to_run(cfg, done: set, fold: int, method: str) -> dict[str, list[int]]:
    """``{mode: [N, ...]}``: the label budgets of ``method`` on ``fold`` that have no rows in
    ``done`` (:func:`finished_settings`), per configured mode."""
    budgets = _budgets(cfg, method)[0]
    return {mode: [n for n in budgets if (fold, method, mode, n) not in done]
            for mode in cfg.finetune.modes}


def budget_label(n: int) -> str:
    """A label budget as the log lines write it: the number, or "all" for the upper bound."""
    return "all" if n == ALL_LABELED else str(n)


def _log_kept_settings(run: Run, method: str, fold: int, todo: dict[str, list[int]]) -> None:
    """On a resume that finished some of a method's settings: one line naming what is kept."""
    budgets = _budgets(run.cfg, method)[0]
    kept = [f"{mode} N={budget_label(n)}" for mode, left in todo.items() for n in budgets
            if n not in left]
    if kept:
        run.log(f"[{method}] fold {fold}: {', '.join(kept)} already in results.csv, kept")


def previous_rows(path: Path) -> list[dict]:
    """Rows of an earlier, interrupted run of the same experiment (for --resume)."""
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _pretrain(run: Run, method: str, fold: int) -> None:
    """The pre-training rounds of ``method`` on ``fold`` (each configured, collected and
    aggregated by the coordinator's strategy), logged, tracked and reported round by round;
    then its final encoder(s) are saved."""
    cfg, coordinator, log, p = run.cfg, run.coordinator, run.log, run.cfg.pretrain
    phase = f"pre-training {method} (fold {fold})"
    info = await_coordinator(coordinator.start_pretraining.remote(method, fold, run.resume),
                             phase, cfg)
    first = info["start_round"]
    log(f"[{method}] pre-training fold {fold}: {cfg.data.clients} clients, "
        f"{info['slices']} slices, {p.rounds} rounds x {p.local_steps} steps"
        + (f"; resumed after round {first}" if first else ""))
    eta = Eta(p.rounds - first)
    budget = PhaseBudget.for_phase(cfg, info, method)   # privacy.*: epsilon per site
    for r in range(first, p.rounds):
        if budget is not None and not budget.may_run_round(r + 1, run.log):
            break
        m: RoundReport = await_coordinator(coordinator.pretrain_round.remote(),
                                           f"{phase}, round {r + 1}", cfg)
        _log_round(run, m, r, eta)
        health = mean_health(m.clients)
        traffic = m.traffic
        epsilons = (budget.after_round(m.round, m.sampled, m.retries)
                    if budget is not None else {})
        _append_jsonl(Path(cfg.experiment.output_dir) / "rounds.jsonl",
                      {"method": method, "fold": fold, "round": m.round, "sampled": m.sampled,
                       "participants": m.participants, "dropped": m.dropped,
                       "retries": m.retries, "dropped_retried": m.dropped_retried,
                       "rejoined": m.rejoined,
                       "bytes_per_client": traffic.bytes_per_client,
                       "bytes_sent_per_client": traffic.bytes_sent_per_client,
                       "bytes_received_per_client": traffic.bytes_received_per_client,
                       "bytes_pool": traffic.bytes_pool, "round_seconds": m.round_seconds,
                       "health": {str(c["client"]): client_health(c) for c in m.clients},
                       **({"privacy": budget.record(epsilons)} if budget is not None else {})})
        collapsed = bool(health) and is_collapsed(health, p.collapse_cosine, p.collapse_rank)
        if health:
            log(f"  round {r + 1}/{p.rounds} health (mean over clients):" + _health_text(
                {names.health(k): v for k, v in health.items()}) + ("  COLLAPSED" if collapsed else ""))
        probe_dice = None
        if p.probe_every and ((r + 1) % p.probe_every == 0 or r + 1 == p.rounds):
            probe_dice = await_coordinator(coordinator.probe.remote(fold, cfg.finetune.n_labeled[0]),
                                           f"{phase}, probe", cfg)
            log(f"  round {r + 1}/{p.rounds} probe Dice {probe_dice:.3f}")
        event = PretrainRound(method=method, fold=fold, round=r + 1, loss=m.mean_loss(),
                              round_seconds=m.round_seconds,
                              bytes_weights=traffic.bytes_weights,
                              bytes_features=traffic.bytes_features,
                              clients_participated=len(m.participants),
                              clients_sampled=len(m.sampled), bytes_pool=traffic.bytes_pool,
                              health=health, collapsed=collapsed if health else None,
                              probe_dice=probe_dice)
        run.tracker.log_metrics(_round_metrics(method, event, m, epsilons),
                                step=fold * p.rounds + r)
        run.report(event)
        if collapsed:
            _collapse_guard(cfg, method, fold, r + 1, health)
    if budget is not None:
        log(budget.line())
        budget.write_summary(cfg.experiment.output_dir, f"{method}/fold{fold}")
    await_coordinator(coordinator.finish_pretraining.remote(method), f"{phase}, finishing", cfg)
    _save_encoders(cfg, coordinator, method, fold)


def _log_round(run: Run, m: RoundReport, r: int, eta: Eta) -> None:
    """A pre-training round's progress lines: each client, who was left out, the round."""
    rounds, log = run.cfg.pretrain.rounds, run.log
    for c in m.clients:
        log(f"  round {r + 1}/{rounds} client {c['client']} "
            f"loss {c['loss']:.4f} {c['seconds']:.1f}s" + _health_text(c))
    for attempt, dropped in enumerate(m.dropped_retried, 1):
        for client, reason in dropped.items():
            log(f"  round {r + 1}/{rounds} attempt {attempt} (retried): client {client} "
                f"left out: {reason}")
    for client, reason in m.dropped.items():
        log(f"  round {r + 1}/{rounds} client {client} left out: {reason}")
    mb = (m.traffic.bytes_weights + m.traffic.bytes_features) / 1e6
    sampled, clients = len(m.sampled), run.cfg.data.clients
    log(f"  round {r + 1}/{rounds} done in {m.round_seconds:.1f}s with "
        f"{len(m.participants)}/{sampled} clients"
        + (f" sampled of {clients}" if sampled < clients else "") + " "
        f"(aggregate {m.aggregate_seconds * 1e3:.0f} ms, exchanged {mb:.1f} MB); "
        f"{eta.step()}")


def _round_metrics(method: str, event: PretrainRound, m: RoundReport,
                   epsilons: dict[int, float]) -> dict[str, float]:
    """A pre-training round's MLflow metrics: the round's, then each client's (with its
    privacy epsilon so far when ``privacy.*`` is on)."""
    return ({names.of_method(method, k): v for k, v in event.metrics().items()}
            | {names.of_client(method, "loss", c["client"]): c["loss"] for c in m.clients}
            | {names.of_client(method, names.health(k), c["client"]): v
               for c in m.clients for k, v in client_health(c).items()}
            | {names.of_client(method, what, c): v
               for what, per_client in (("bytes_sent", m.traffic.bytes_sent_per_client),
                                        ("bytes_received", m.traffic.bytes_received_per_client))
               for c, v in per_client.items()}
            | {names.of_client(method, names.PRIVACY_EPSILON, c): e for c, e in epsilons.items()})


def client_health(client_metrics: dict) -> dict[str, float]:
    """The health figures of one client's round metrics: {'mean_cosine': .., ...}."""
    return names.health_of(client_metrics)


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
    return "".join(f" {short[k]} {metrics[names.health(k)]:.3f}" for k in short
                   if names.health(k) in metrics)


def _collapse_guard(cfg, method: str, fold: int, round_: int, health: dict) -> None:
    """``pretrain.collapse_guard``: warn (one line, level warning: ``-q`` shows it) or stop
    the run (CollapseError)."""
    p = cfg.pretrain
    line = (f"{method} fold {fold}: embeddings collapsed at round {round_} (mean cosine "
            f"{health['mean_cosine']:.3f} > {p.collapse_cosine} or effective rank "
            f"{health['effective_rank']:.2f} < {p.collapse_rank}); its Dice says little "
            f"about the method")
    if p.collapse_guard == "stop":
        raise CollapseError(f"{line}; stopped (pretrain.collapse_guard=stop)")
    get_logger(__name__).warning(line)


def _save_encoders(cfg, coordinator, method, fold) -> None:
    """The final encoder(s) of a pre-training phase, as a torch file in <output_dir>/encoders."""
    states = await_coordinator(coordinator.encoder_states.remote(method), "saving encoders", cfg)
    path = Path(cfg.experiment.output_dir) / "encoders" / f"{method}-fold{fold}.pt"
    tensors = [as_tensors(s) for s in states]
    save_atomic(tensors[0] if len(tensors) == 1
                else {f"client{i}": t for i, t in enumerate(tensors)}, path)


def as_tensors(state: dict) -> dict[str, torch.Tensor]:
    """An encoder state of arrays as torch tensors (what the encoder files hold)."""
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _budgets(cfg, method: str) -> tuple[list[int], str]:
    """A method's label budgets and the encoder its rows start from: the upper bound is
    random init with every labelable training patient of each client."""
    if method == UPPER_BOUND:
        return [ALL_LABELED], "random"
    return cfg.finetune.n_labeled, method


def _setting_rows(cfg, method, mode, fold, n, results, log, progress: Eta) -> list[dict]:
    """Results rows (one per client) of one finished setting, logged with the progress of
    its phase (a fold's local settings, a method's federated ones): settings done / total
    and the ETA, as pre-training logs rounds."""
    dice = sum(r["dice_mean"] for r in results) / len(results)
    label = budget_label(n)
    steps = "" if "steps" not in results[0] else \
        f" after {np.mean([r['steps'] for r in results]):.0f} steps (mean over clients)"
    left = progress.step()
    log(f"[{method}] {mode} fine-tuning, N={label}, fold {fold}: mean Dice {dice:.3f}{steps}; "
        f"setting {progress.done}/{progress.total} done, {left}")
    # A client's row carries its own N when the budget was "all" (it may differ).
    return [{"method": method, "finetune_mode": mode, "n_labeled": n, "fold": fold,
             "seed": cfg.experiment.seed, **r} for r in results]


def _report_setting(report, method, mode, fold, n, rows) -> None:
    validation = [r.get("val_dice") for r in rows]
    val_dice = (float(np.mean(validation)) if all(v is not None and np.isfinite(v)
                                                   for v in validation) else None)
    report(SettingFinished(method=method, finetune_mode=mode, n_labeled=n, fold=fold,
                           dice_mean=sum(r["dice_mean"] for r in rows) / len(rows),
                           val_dice=val_dice))


def _finetune_federated(run: Run, method: str, fold: int, eta: Eta,
                        budgets: list[int]) -> list[dict]:
    """A method's federated settings of label budgets ``budgets``, one N after another (each
    is a run of the strategy's rounds over every client), each logged as it finishes."""
    cfg, coordinator, log, report = run.cfg, run.coordinator, run.log, run.report
    encoder = _budgets(cfg, method)[1]
    start = time.perf_counter()
    progress = Eta(len(budgets))
    rows: list[dict] = []
    for n in budgets:
        results = await_coordinator(coordinator.finetune_federated.remote(encoder, fold, n,
                                                                          cfg.finetune.rounds),
                                    f"{method} federated fine-tuning", cfg)
        setting = _setting_rows(cfg, method, "federated", fold, n, results, log, progress)
        _report_setting(report, method, "federated", fold, n, setting)
        rows += setting
    log(f"[{method}] federated fine-tuning of {len(budgets)} setting(s) took "
        f"{time.perf_counter() - start:.1f}s; {eta.step()}")
    return rows


def _finetune_local(run: Run, settings: list[tuple[str, int]], fold: int,
                    eta: Eta) -> list[dict]:
    """The local settings ``settings`` ((method, N), in the configured order) of a fold in
    one go: each client actor works through its queue without waiting for the driver
    (``finetune.concurrency`` at once); the driver logs each setting as its last client
    finishes. Rows and reports follow the given order, whatever the order they finished in."""
    cfg, coordinator, log, report = run.cfg, run.coordinator, run.log, run.report
    methods = list(dict.fromkeys(method for method, _ in settings))
    flat = [(_budgets(cfg, method)[1], n) for method, n in settings]
    start = time.perf_counter()
    progress = Eta(len(settings))
    calls = await_coordinator(coordinator.submit_local_settings.remote(fold, flat),
                              f"local fine-tuning of fold {fold}", cfg)
    finished: dict[int, list[dict]] = {}
    for i, results in as_finished(calls, f"local fine-tuning of fold {fold}", cfg):
        method, n = settings[i]
        finished[i] = _setting_rows(cfg, method, "local", fold, n, results, log, progress)
    rows: list[dict] = []
    for i, (method, n) in enumerate(settings):
        _report_setting(report, method, "local", fold, n, finished[i])
        rows += finished[i]
    log(f"local fine-tuning of fold {fold} ({len(flat)} setting(s) x {cfg.data.clients} "
        f"clients, {', '.join(methods)}) took {time.perf_counter() - start:.1f}s; "
        f"{eta.step(len(methods))}")
    return rows


def _log_final(results: pd.DataFrame, tracker) -> None:
    setting = results.groupby(["method", "finetune_mode", "n_labeled"])
    tracker.log_metrics({names.setting("dice_mean", m, mode, n): v
                         for (m, mode, n), v in setting["dice_mean"].mean().items()})
    for column in ("steps", "val_dice"):   # how long fine-tuning ran, how well it validated
        if column in results.columns:
            tracker.log_metrics({names.setting(column, m, mode, n): v for (m, mode, n), v
                                 in setting[column].mean().dropna().items()})
