"""The sweep driver: run (or resume) a sweep with Ray Tune, then finish its MLflow parent
run (summary table, plots, best trial) and print the outcome."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from ray.tune import Callback

from fcl_ray.config import ConfigError
from fcl_ray.core import metrics as names
from fcl_ray.config_io import flatten, to_dict
from fcl_ray.federation.cluster import connect_ray, disconnect_ray
from fcl_ray.log import driver_level, progress
from fcl_ray.sweep import storage
from fcl_ray.sweep.spec import STATE_FILE, SweepSpec
from fcl_ray.sweep.trial import (make_scheduler, make_search_alg, param_space,
                                 run_trial, stop_collapsed, trial_resources)


# ----------------------------------------------------------------------------- child runs
class CloseChildRuns(Callback):
    """Ends each trial's MLflow child run as Tune ends the trial, with the status Tune knows
    (the trial reports its run id as ``mlflow_run_id`` with every result):

    completed -> FINISHED, ``ended_by=completed`` (the trial has ended it so already);
    stopped by the scheduler or the collapse stopper -> KILLED, ``early_stop`` (its actors are
    ended before run_experiment can close the run); errored -> FAILED, ``error``; still running
    when the sweep was interrupted -> KILLED, ``interrupted`` (``--resume`` reopens it). A trial
    that fails before its first report has no id here; run_experiment ended its run FAILED.

    A trial that Tune stops (early stop, interrupt) ends its own run too, as it unwinds from
    the SystemExit Tune raises in its ``tune.report``, and possibly after this callback:
    run_experiment ends a stopped run KILLED as well, so the order does not matter."""

    def __init__(self, tracking_uri: str):
        self.tracking_uri = tracking_uri
        self.started: set[str] = set()   # trial ids that ran in this (part of the) sweep
        self.stopped: set[str] = set()   # trial ids that Tune ended early
        self.closed: set[str] = set()    # trial ids whose run this callback has ended

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.started.add(trial.trial_id)
        if result.get("done"):   # Tune sets it when the scheduler or a stopper ends the trial
            self.stopped.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.stopped:
            self._close(trial, "KILLED", "early_stop")
        else:
            self._close(trial, "FINISHED", "completed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", "error")

    def on_experiment_end(self, trials, **info):
        # An interrupted sweep: Tune has saved its trials as running (so --resume continues
        # them), then stopped their actors; their runs are still open.
        for trial in trials:
            if trial.trial_id in self.started - self.closed:
                self._close(trial, "KILLED", "interrupted")

    def _close(self, trial, status: str, ended_by: str) -> None:
        self.closed.add(trial.trial_id)
        run_id = (trial.last_result or {}).get("mlflow_run_id")
        if not run_id:
            return
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri)
        client.set_tag(run_id, "ended_by", ended_by)
        client.set_terminated(run_id, status=status)


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
    experiment_path: str            # a folder, or a URI as given in storage_path
    errors: int


def run_sweep(spec: SweepSpec, resume: bool = False, tracking_uri: Optional[str] = None,
              log: Callable[[str], None] = progress, callbacks: tuple = ()) -> SweepOutcome:
    """Run (or resume) the sweep; return its trial table and where MLflow has it.
    ``callbacks``: more Tune callbacks (kept with the sweep's state, so a resume has them)."""
    import pandas as pd
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig, Tuner

    from fcl_ray import tracking

    base = spec.base_config
    uri = tracking.absolute_uri(tracking_uri or spec.tracking_uri or base.tracking.uri
                                or os.environ.get("MLFLOW_TRACKING_URI")
                                or tracking.DEFAULT_URI)
    mlflow_experiment = spec.tracking_experiment or base.tracking.experiment or spec.name
    exp_path = spec.experiment_path   # a URI (s3://, gs://, file://) goes to Tune unchanged
    fs = storage.tune_filesystem(exp_path)   # None: Tune opens the path itself
    tune_path = storage.open_storage(exp_path)[1] if fs else exp_path   # the path on fs
    state_path = storage.join(exp_path, STATE_FILE)
    restoring = resume and Tuner.can_restore(tune_path, storage_filesystem=fs)
    if not resume and storage.exists(exp_path):
        raise ConfigError(f"sweep key 'name': a sweep '{spec.name}' already exists in "
                          f"{exp_path}; resume it with --resume, or choose another name "
                          f"or storage_path")
    if resume and not restoring:
        log(f"nothing to resume in {exp_path}; starting the sweep")

    started_ray = connect_ray(base)
    try:
        saved = storage.read_text(state_path) if restoring else None
        state = json.loads(saved) if saved else {}
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
        storage.write_text(state_path, json.dumps({"parent_run_id": parent, "tracking_uri": uri,
                                          "experiment": mlflow_experiment}, indent=1))
        base_tree = to_dict(base)
        for key in ("root", "metadata", "cache_dir"):   # trials do not run in this cwd
            if base_tree["data"].get(key):
                base_tree["data"][key] = str(Path(base_tree["data"][key]).resolve())
        base_tree["data"]["client_roots"] = [str(Path(p).resolve())
                                             for p in base_tree["data"]["client_roots"]]
        # Trial outputs: <experiment>/outputs/<trial id> in a local folder; with a URI, each
        # trial's Tune working folder on its node (results also go to MLflow and, for
        # resuming, into the trial checkpoints).
        outputs = None if storage.is_uri(exp_path) else storage.join(exp_path, "outputs")
        setup = {"base": base_tree, "name": spec.name, "outputs": outputs,
                 "tracking_uri": uri, "tracking_experiment": mlflow_experiment,
                 "parent_run_id": parent, "metric": spec.metric, "mode": spec.mode,
                 "cpus_per_client": spec.cpus_per_client,
                 "gpus_per_client": spec.gpus_per_client,
                 "log_level": driver_level()}   # the trials' lines at this process's level
        trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                        trial_resources(spec))
        wall = time.perf_counter()
        if restoring:
            tuner = Tuner.restore(tune_path, trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False,
                                  storage_filesystem=fs)
        else:
            tuner = Tuner(
                trainable, param_space=param_space(spec),
                tune_config=TuneConfig(metric=spec.metric, mode=spec.mode,
                                       scheduler=make_scheduler(spec),
                                       search_alg=make_search_alg(spec),
                                       num_samples=spec.num_samples,
                                       max_concurrent_trials=spec.max_concurrent_trials or None),
                run_config=RunConfig(name=spec.name, storage_path=tune_path.rsplit("/", 1)[0],
                                     storage_filesystem=fs, stop=stop_collapsed,
                                     callbacks=([CloseChildRuns(uri)] if parent else [])
                                     + list(callbacks),
                                     failure_config=FailureConfig(max_failures=spec.max_failures),
                                     # a trial resumes from its last round; older ones go
                                     checkpoint_config=CheckpointConfig(num_to_keep=2),
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
                   "mean_cosine": metrics.get(names.health("mean_cosine"), float("nan")),
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
        disconnect_ray(started_ray)


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
                   exp_path: str) -> None:
    from fcl_ray import tracking

    local = not storage.is_uri(exp_path)
    out = Path(exp_path) / "summary" if local else Path(tempfile.mkdtemp(prefix="fcl-sweep-"))
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
    tracking.finish_run(uri, parent, "FINISHED", metrics=metrics, tags=tags,
                        artifacts=tuple(artifacts))
    if not local:   # next to Tune's state in the bucket, as a local sweep has it
        storage.upload_folder(out, storage.join(exp_path, "summary"))
        shutil.rmtree(out, ignore_errors=True)


def _plot_sweep(grid, metric: str, path: Path) -> Optional[Path]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for result in grid:
        df = result.metrics_dataframe
        if df is None or metric not in df or not len(df):
            continue
        ax.plot(df["training_iteration"], df[metric], marker="o",
                label=str(df["trial_id"].iloc[0]) if "trial_id" in df else None)
    if not ax.lines:
        return None
    ax.set_xlabel("report (training_iteration)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_metric_vs_hyperparameters(trials: Any, keys: list[str], metric: str,
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
    from matplotlib.figure import Figure
    import matplotlib.ticker

    fig = Figure(figsize=(3.6 * len(keys), 3.2))
    axes = fig.subplots(1, len(keys), squeeze=False)
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
