"""Results tables and plots with pandas/matplotlib: per-client rows -> the paper's tables.

Inputs are ``results.csv`` files written by ``fcl-ray run`` (one row per method,
finetune_mode, n_labeled, fold, client) or the MLflow runs of an experiment (each run logs
its ``results.csv`` as an artifact). The paper's two tables (local and federated fine-tuning)
have one row per method and one column per N; a cell is the mean ± std over clients of the
Dice after averaging the folds of each client.

When several sources hold the same (method, finetune_mode, n_labeled, fold, client) row, the
one read last wins (MLflow runs are read oldest first, so a re-run replaces the old numbers).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from fcl_ray.config import FINETUNE_MODES, ConfigError

RESULT_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client",
                  "dice_mean", "dice_rv", "dice_myo", "dice_lv"]
KEY_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client"]
# Row order of the paper's tables; methods not listed follow in order of appearance.
METHOD_ORDER = ["random", "local_cl", "fedrotation", "fedsimclr", "fedswav", "fedca", "fcl",
                "fcl_no_exchange", "fcl_no_matching", "fcl_literal_negatives", "upper_bound"]
# Rows of the fully supervised reference (random init, every training case labeled): its N is
# the whole training set, so it gets a column of its own ("all labels") instead of an N column.
UPPER_BOUND = "upper_bound"
ALL_LABELS = "all"


# ----------------------------------------------------------------------------- the old API
def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over clients (after averaging folds per client), per method/mode/N."""
    dice_cols = [c for c in results.columns if c.startswith("dice_")]
    per_client = (results.groupby(["method", "finetune_mode", "n_labeled", "client"], sort=False)
                  [dice_cols].mean().reset_index())
    grouped = per_client.groupby(["method", "finetune_mode", "n_labeled"], sort=False)[dice_cols]
    mean, std = grouped.mean(), grouped.std(ddof=0)
    table = mean.copy().astype(object)
    for col in dice_cols:
        table[col] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean[col], std[col])]
    order = ["dice_rv", "dice_myo", "dice_lv", "dice_mean"]
    return table[[c for c in order if c in dice_cols] + [c for c in dice_cols if c not in order]]


def format_table(results: pd.DataFrame) -> str:
    """A plain-text table for the terminal."""
    table = summary_table(results).rename(columns=lambda c: c.replace("dice_", ""))
    return table.to_string()


# ----------------------------------------------------------------------------- reading
def check_results(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Raise ConfigError (one line naming ``where``) unless ``frame`` is a usable results set."""
    if frame.empty:
        raise ConfigError(f"results {where}: no rows")
    missing = [c for c in KEY_COLUMNS + ["dice_mean"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"results {where}: missing columns {', '.join(missing)}")
    modes = sorted(set(frame["finetune_mode"].astype(str)) - set(FINETUNE_MODES))
    if modes:
        raise ConfigError(f"results {where}: unknown finetune_mode {', '.join(modes)} "
                          f"(expected {', '.join(FINETUNE_MODES)})")
    n = pd.to_numeric(frame["n_labeled"], errors="coerce")
    if n.isna().any() or (n != n.round()).any():
        raise ConfigError(f"results {where}: n_labeled must be whole numbers")
    frame = frame.copy()
    frame["n_labeled"] = n.astype(int)
    frame["method"] = frame["method"].astype(str)
    return frame


def read_results_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise ConfigError(f"results file '{path}': not found")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"results file '{path}': is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"results file '{path}': not a CSV ({str(err).splitlines()[0]})") from None
    return check_results(frame, f"file '{path}'")


def read_mlflow_results(experiment: str, tracking_uri: Optional[str] = None) -> list[tuple[str, pd.DataFrame]]:
    """The ``results.csv`` artifact of every run of an MLflow experiment (name or id), oldest
    run first, as (label, frame) pairs."""
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"'{experiment}' is neither a results file nor an MLflow experiment "
                          f"(no MLflow store at {uri})")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        try:
            exp = client.get_experiment(experiment)
        except mlflow.exceptions.MlflowException:
            exp = None
    if exp is None:
        raise ConfigError(f"'{experiment}' is neither a results file nor an MLflow experiment "
                          f"at {uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=10000)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if "results.csv" not in {a.path for a in client.list_artifacts(run.info.run_id)}:
                continue
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                        artifact_path="results.csv",
                                                        dst_path=f"{tmp}/{run.info.run_id}",
                                                        tracking_uri=uri)
            label = f"run {run.info.run_id} of MLflow experiment '{experiment}'"
            frames.append((label, check_results(pd.read_csv(local), label)))
    if not frames:
        raise ConfigError(f"MLflow experiment '{experiment}' at {uri}: no run has a "
                          f"results.csv artifact ({len(runs)} runs)")
    return frames


def load_results(sources: Sequence[str], tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """One results set from results.csv files, run folders and/or MLflow experiment names.

    Sources must agree on their Dice columns (e.g. not ACDC's rv/myo/lv mixed with a
    single-structure dataset). Duplicate rows: the last source read wins; how many were
    dropped is in ``frame.attrs['duplicates_dropped']``.
    """
    if not sources:
        raise ConfigError("report: no results given")
    pieces: list[tuple[str, pd.DataFrame]] = []
    for source in sources:
        path = Path(source)
        if path.exists() or source.endswith(".csv"):
            pieces.append((f"file '{source}'", read_results_csv(path)))
        else:
            pieces.extend(read_mlflow_results(source, tracking_uri))
    first_label, first = pieces[0]
    dice_first = sorted(c for c in first.columns if c.startswith("dice_"))
    for label, frame in pieces[1:]:
        dice = sorted(c for c in frame.columns if c.startswith("dice_"))
        if dice != dice_first:
            raise ConfigError(f"results do not match: {first_label} has {', '.join(dice_first)} "
                              f"but {label} has {', '.join(dice)}")
    results = pd.concat([f for _, f in pieces], ignore_index=True)
    before = len(results)
    results = results.drop_duplicates(KEY_COLUMNS, keep="last").reset_index(drop=True)
    results.attrs["duplicates_dropped"] = before - len(results)
    return results


# ----------------------------------------------------------------------------- tables
def _method_order(methods: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]


def client_means(results: pd.DataFrame, metric: str = "dice_mean") -> pd.DataFrame:
    """One value per (method, mode, N, client): the metric averaged over folds."""
    if metric not in results.columns:
        have = ", ".join(c for c in results.columns if c.startswith("dice_"))
        raise ConfigError(f"report: metric '{metric}' not in the results (have {have})")
    return (results.groupby(["method", "finetune_mode", "n_labeled", "client"])[metric]
            .mean().reset_index())


def paper_stats(results: pd.DataFrame, mode: str, metric: str = "dice_mean") -> pd.DataFrame:
    """Numbers of one table: index = method, columns = (N, 'mean'|'std'|'clients'), where N
    is each label budget and ``ALL_LABELS`` holds the upper bound's cell."""
    per_client = client_means(results, metric)
    per_client = per_client[per_client["finetune_mode"] == mode].copy()
    if per_client.empty:
        raise ConfigError(f"report: no '{mode}' fine-tuning rows")
    upper = per_client["method"] == UPPER_BOUND
    ns: list = sorted(per_client.loc[~upper, "n_labeled"].unique().tolist())
    if upper.any():
        per_client["n_labeled"] = per_client["n_labeled"].astype(object)
        per_client.loc[upper, "n_labeled"] = ALL_LABELS
        ns.append(ALL_LABELS)
    stats = (per_client.groupby(["method", "n_labeled"])[metric]
             .agg(mean="mean", std=lambda s: s.std(ddof=0), clients="count"))
    table = stats.unstack("n_labeled").swaplevel(axis=1)
    table = table.reindex(columns=pd.MultiIndex.from_product([ns, ["mean", "std", "clients"]]))
    return table.reindex(_method_order(per_client["method"]))


def _column_label(n) -> str:
    return "all labels" if n == ALL_LABELS else f"N={n}"


def paper_table(results: pd.DataFrame, mode: str, metric: str = "dice_mean") -> pd.DataFrame:
    """The paper's table as text cells 'mean ± std' (rows = methods, columns = 'N=n', plus
    'all labels' when the upper bound was run)."""
    stats = paper_stats(results, mode, metric)
    cells = {}
    for n in stats.columns.get_level_values(0).unique():
        cells[_column_label(n)] = [("—" if pd.isna(m) else f"{m:.3f} ± {s:.3f}")
                                   for m, s in zip(stats[(n, "mean")], stats[(n, "std")])]
    return pd.DataFrame(cells, index=stats.index)


def to_markdown(table: pd.DataFrame, index_name: str = "method") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    header = [index_name, *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        lines.append("| " + " | ".join([str(name), *map(str, row.tolist())]) + " |")
    return "\n".join(lines) + "\n"


def stats_csv(stats: pd.DataFrame) -> pd.DataFrame:
    """Flat columns for CSV: method, N=1 mean, N=1 std, N=1 clients, ..."""
    flat = stats.copy()
    flat.columns = [f"{_column_label(n)} {what}" for n, what in flat.columns]
    flat.index.name = "method"
    return flat.reset_index()


# ----------------------------------------------------------------------------- plot
def plot_dice_vs_n(results: pd.DataFrame, path: str | Path, metric: str = "dice_mean") -> Path:
    """PNG: metric against N per method (mean ± std over clients), one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in FINETUNE_MODES if m in set(results["finetune_mode"])]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), sharey=True,
                             squeeze=False)
    for ax, mode in zip(axes[0], modes):
        stats = paper_stats(results, mode, metric)
        ns = [n for n in stats.columns.get_level_values(0).unique() if n != ALL_LABELS]
        for method in stats.index:
            if method == UPPER_BOUND:
                mean = stats.loc[method, (ALL_LABELS, "mean")]
                ax.axhline(mean, color="black", linestyle="--", linewidth=1,
                           label=f"{method} (all labels)")
                continue
            mean = stats.loc[method, [(n, "mean") for n in ns]].to_numpy(float)
            std = stats.loc[method, [(n, "std") for n in ns]].to_numpy(float)
            style = "-" if method in ("fcl", "random") or not method.startswith("fcl") else ":"
            ax.errorbar(ns, mean, yerr=std, label=method, marker="o", ms=4, capsize=3,
                        linestyle=style, linewidth=2.2 if method == "fcl" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("N labeled volumes per client")
        ax.set_title(f"{mode} fine-tuning")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (mean ± std over clients)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- all of it
def render_report(results: pd.DataFrame, metric: str = "dice_mean") -> str:
    """Both tables as Markdown text (modes without rows are skipped)."""
    client_means(results, metric)   # validates the metric
    parts = []
    for mode in FINETUNE_MODES:
        if mode in set(results["finetune_mode"]):
            parts.append(f"### {mode} fine-tuning ({metric}, mean ± std over clients)\n\n"
                         + to_markdown(paper_table(results, mode, metric)))
    return "\n".join(parts)


def write_report(results: pd.DataFrame, out_dir: str | Path,
                 metric: str = "dice_mean") -> list[Path]:
    """table_<mode>.md/.csv for each mode present, and dice_vs_n.png, under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for mode in FINETUNE_MODES:
        if mode not in set(results["finetune_mode"]):
            continue
        md, csv = out / f"table_{mode}.md", out / f"table_{mode}.csv"
        md.write_text(f"{mode} fine-tuning: {metric}, mean ± std over clients "
                      f"(folds averaged per client)\n\n" + to_markdown(paper_table(results, mode, metric)))
        stats_csv(paper_stats(results, mode, metric)).to_csv(csv, index=False, float_format="%.4f")
        written += [md, csv]
    written.append(plot_dice_vs_n(results, out / "dice_vs_n.png", metric))
    return written
