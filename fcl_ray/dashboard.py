"""What a finished ``fcl-ray run`` puts on its MLflow run, so the UI is the results dashboard.

- the paper-style tables (``report/table_<mode>.md`` / ``.csv``), the Dice-vs-N plot and a
  per-client Dice bar chart (``report/``), made by :mod:`fcl_ray.report`;
- per-client Dice as metrics ``dice/<method>/<mode>/N<n>/client<i>`` (mean over folds), so
  the compare view can chart them;
- the final encoders as MLflow models (:mod:`fcl_ray.encoders`), registered when asked;
- the input data with ``mlflow.log_input`` (:func:`dataset_record`), so runs on different
  data are told apart;
- and it prints where to look at the run (:func:`fcl_ray.tracking.run_link`).

Nothing here runs when tracking is off (MLflow is then never imported). A step that fails
only logs a line: the results are already on disk and the run still counts as finished.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from fcl_ray.config import Config
from fcl_ray.core import metrics as names
from fcl_ray.config_io import to_dict


# ----------------------------------------------------------------------------- results
def client_dice_metrics(results: pd.DataFrame, metric: str = "dice_mean") -> dict[str, float]:
    """``dice/<method>/<mode>/N<n>/client<i>``: each client's Dice, averaged over folds."""
    means = results.groupby(["method", "finetune_mode", "n_labeled", "client"])[metric].mean()
    return {names.client_dice(m, mode, n, c): float(v) for (m, mode, n, c), v in means.items()}


def plot_client_dice(results: pd.DataFrame, path: str | Path,
                     metric: str = "dice_mean") -> Path:
    """PNG: one panel per (mode, N); per client a bar per method (mean over folds, error bar
    = std over folds when there are several)."""
    from matplotlib.figure import Figure
    import numpy as np

    from fcl_ray.results import _method_order

    settings = list(results.groupby(["finetune_mode", "n_labeled"]).groups)
    methods = _method_order(results["method"])
    clients = sorted(results["client"].unique())
    panel = max(4.5, 0.3 * len(clients) * len(methods) + 1.5)   # inches per (mode, N)
    fig = Figure(figsize=(panel * len(settings), 3.8))
    axes = fig.subplots(1, len(settings), sharey=True, squeeze=False)
    width = 0.8 / len(methods)
    for ax, (mode, n) in zip(axes[0], settings):
        part = results[(results["finetune_mode"] == mode) & (results["n_labeled"] == n)]
        stats = part.groupby(["method", "client"])[metric].agg(["mean", "std"])
        for i, method in enumerate(methods):
            if method not in stats.index.get_level_values(0):
                continue
            rows = stats.loc[method].reindex(clients)
            ax.bar(np.arange(len(clients)) + (i - (len(methods) - 1) / 2) * width,
                   rows["mean"], width, yerr=rows["std"].fillna(0), capsize=2, label=method)
        ax.set_xticks(range(len(clients)), [f"client {c}" for c in clients])
        ax.set_title(f"{mode} fine-tuning, N={n}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (mean over folds)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def write_run_report(results: pd.DataFrame, out_dir: str | Path,
                     reference: Optional[str] = None) -> list[Path]:
    """The tables, the Dice-vs-N plot and the per-client chart under ``out_dir``, and the
    paired-difference table and plot of ``reference`` against every other method."""
    from fcl_ray.report import write_paired_report, write_report
    from fcl_ray.results import UPPER_BOUND
    from fcl_ray.statistics import paired_differences

    out = Path(out_dir)
    written = write_report(results, out)
    written.append(plot_client_dice(results, out / "dice_per_client.png"))
    methods = set(results["method"]) - {UPPER_BOUND}
    if reference in methods and len(methods) > 1:
        written += write_paired_report(paired_differences(results, reference=reference), out)
    return written


# ----------------------------------------------------------------------------- datasets
def _digest(items: Any) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_record(cfg: Config) -> dict[str, Any]:
    """What a run's input data is, without reading voxels: name, source, digest, one row per
    case (or per client), and tags.

    Synthetic: the generator and its settings; the digest hashes those settings. On disk
    (``data.root``): kind, root and every client's case list; the digest hashes each case's
    file names (relative to the root) and sizes - cheap, and changes when files are added,
    removed, renamed or rewritten to another size (moving the dataset keeps it). With
    ``data.client_roots`` the folders sit on the sites' machines: the digest hashes the
    folder list and the reading settings only."""
    d = cfg.data
    # Every data.* setting that shapes what the clients see (not where files or caches are).
    settings = {k: v for k, v in to_dict(cfg)["data"].items()
                if k not in ("root", "client_roots", "cache", "cache_dir", "metadata")}
    if d.kind == "synthetic":
        settings["seed"] = cfg.experiment.seed          # the generator's seed
        rows = [{"client": c, "cases": d.cases_per_client} for c in range(d.clients)]
        return {"name": f"synthetic-seed{cfg.experiment.seed}", "source": None,
                "digest": _digest(settings), "rows": rows, "tags": settings}
    if d.client_roots:
        settings["client_roots"] = list(d.client_roots)
        rows = [{"client": c, "root": r} for c, r in enumerate(d.client_roots)]
        return {"name": f"{d.kind}-sites", "source": None,
                "digest": _digest(settings), "rows": rows, "tags": settings}
    from fcl_ray.data.readers import client_cases

    root = Path(d.root).expanduser().resolve()
    groups, _ = client_cases(d)
    rows, listing = [], []
    for client, cases in enumerate(groups):
        for case in cases:
            files = []
            for f in case.files:
                path = Path(f).resolve()
                rel = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
                files.append((rel, path.stat().st_size if path.exists() else -1))
            listing.append((client, case.case_id, sorted(files)))
            rows.append({"client": client, "case_id": case.case_id, "files": len(files),
                         "bytes": sum(max(s, 0) for _, s in files)})
    digest = _digest([settings, listing])          # the root itself left out: data may move
    return {"name": f"{d.kind}-{root.name}", "source": str(root), "digest": digest,
            "rows": rows, "tags": settings | {"root": str(root)}}


def log_dataset(cfg: Config) -> dict[str, Any]:
    """``mlflow.log_input`` of :func:`dataset_record` on the active run (context training)."""
    import mlflow
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    record = dataset_record(cfg)
    source = record["source"] or CodeDatasetSource(
        tags={"generator": "fcl_ray.data", **{k: str(v) for k, v in record["tags"].items()}})
    with warnings.catch_warnings():   # its schema hint about int columns does not apply
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(pd.DataFrame(record["rows"]), source=source,
                                          name=record["name"], digest=record["digest"])
        mlflow.log_input(dataset, context="training",
                         tags={k: str(v)[:250] for k, v in record["tags"].items()})
    return record


def log_dataset_early(cfg: Config, tracker, log: Callable[[str], None] = print) -> None:
    """The dataset on the run as soon as it starts, so a run that fails still says which
    data it saw; a failure here is one logged line, never the end of the run."""
    if tracker.run_id is None:
        return
    try:
        log_dataset(cfg)
    except Exception as err:   # noqa: BLE001  (a nicety; the experiment goes on)
        log(f"could not add the dataset to MLflow run {tracker.run_id}: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")


# ----------------------------------------------------------------------------- all of it
def publish_run(cfg: Config, tracker, results: pd.DataFrame, out_dir: str | Path,
                log: Callable[[str], None] = print) -> Optional[list[str]]:
    """Put tables, plots, per-client metrics and encoder models on the run of ``tracker``
    (the dataset went on at the start: :func:`log_dataset_early`), then print where to look
    at it. Returns those lines (None: tracking off)."""
    if tracker.run_id is None:
        return None
    from fcl_ray.tracking import method_rows, run_link

    out = Path(out_dir)

    def attempt(what: str, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Exception as err:   # noqa: BLE001  (the results are safe on disk already)
            log(f"could not add {what} to MLflow run {tracker.run_id}: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            return None

    def report_files() -> None:
        rows = method_rows(cfg)
        reference = "fcl" if "fcl" in rows else rows[0]
        for path in write_run_report(results, out / "report", reference):
            tracker.mlflow.log_artifact(str(path), artifact_path="report")

    attempt("the tables and plots", report_files)
    attempt("per-client Dice metrics",
            lambda: tracker.log_metrics(client_dice_metrics(results)))
    from fcl_ray.encoders import log_encoders

    attempt("the encoder models", lambda: log_encoders(cfg, out, tracker.run_id, log))
    lines = run_link(tracker.client_uri, tracker.experiment_id, tracker.run_id)
    for line in lines:
        log(line)
    return lines
