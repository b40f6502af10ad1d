"""Results tables and plots with pandas/matplotlib: per-client rows -> the paper's tables.

Inputs are ``results.csv`` files written by ``fcl-ray run`` (one row per method,
finetune_mode, n_labeled, fold, client) or the MLflow runs of an experiment (each run logs
its ``results.csv`` as an artifact). The paper's two tables (local and federated fine-tuning)
have one row per method and one column per N; a cell is the mean ± std over clients of the
Dice after averaging the folds of each client.

When several sources hold the same (method, finetune_mode, n_labeled, fold, client, seed) row,
the one read last wins (MLflow runs are read oldest first, so a re-run replaces the old
numbers). Rows without a ``seed`` column count as seed 0.

Beside the tables, ``paired_differences`` compares a reference method (FCL by default) with
each other method on the units both were run on (client, fold, seed): mean difference, a
bootstrap 95 % CI and a Wilcoxon signed-rank p-value per fine-tuning mode and N.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from fcl_ray.config import FINETUNE_MODES, ConfigError

RESULT_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client",
                  "dice_mean", "dice_rv", "dice_myo", "dice_lv"]
KEY_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client"]
# Written by the driver (experiment.seed); results concatenated from several seeds are told
# apart by it. Absent -> every row is seed 0.
SEED_COLUMN = "seed"
# Rows of the fully supervised reference (random init, every training case labeled): its N is
# the whole training set, so it gets a column of its own ("all labels") instead of an N column.
UPPER_BOUND = "upper_bound"
ALL_LABELS = "all"
# Row order of the paper's tables; methods not listed follow in order of appearance.
METHOD_ORDER = ["random", "local_cl", "fedrotation", "fedsimclr", "fedswav", "fedca", "fcl",
                "fcl_no_exchange", "fcl_no_matching", "fcl_literal_negatives", UPPER_BOUND]


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
    if SEED_COLUMN in frame.columns:
        seed = pd.to_numeric(frame[SEED_COLUMN], errors="coerce")
        if seed.isna().any() or (seed != seed.round()).any():
            raise ConfigError(f"results {where}: seed must be whole numbers")
        frame[SEED_COLUMN] = seed.astype(int)
    return frame


def with_seed(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with a whole-number seed column (0 where a source had none)."""
    results = results.copy()
    if SEED_COLUMN not in results.columns:
        results[SEED_COLUMN] = 0
    results[SEED_COLUMN] = results[SEED_COLUMN].fillna(0).astype(int)
    return results


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

    from fcl_ray.tracking import DEFAULT_URI

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
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
    if SEED_COLUMN in results.columns:     # a source without seeds is seed 0 (not NaN)
        results = with_seed(results)
    before = len(results)
    keys = KEY_COLUMNS + ([SEED_COLUMN] if SEED_COLUMN in results.columns else [])
    results = results.drop_duplicates(keys, keep="last").reset_index(drop=True)
    results.attrs["duplicates_dropped"] = before - len(results)
    return results


# ----------------------------------------------------------------------------- tables
def _method_order(methods: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]


def client_means(results: pd.DataFrame, metric: str = "dice_mean") -> pd.DataFrame:
    """One value per (method, mode, N, client): the metric averaged over folds (and seeds)."""
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


# ----------------------------------------------------------------------------- paired statistics
UNIT_COLUMNS = ["client", "fold", SEED_COLUMN]
PAIRED_COLUMNS = ["finetune_mode", "n_labeled", "reference", "method", "n_pairs",
                  "reference_mean", "method_mean", "mean_diff", "ci_low", "ci_high", "p_value",
                  "n_clients", "client_ci_low", "client_ci_high", "client_p_value"]
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
# Differences are rounded before the test so that float noise (1e-17) is not a "difference".
_DIFF_DECIMALS = 12


def bootstrap_ci(diffs: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diffs`` (units resampled with replacement).

    A fresh Generator per call, so a row's interval does not depend on the rows before it.
    """
    diffs = np.asarray(diffs, dtype=float)
    if np.all(np.round(diffs - diffs[0], _DIFF_DECIMALS) == 0):
        return float(diffs[0]), float(diffs[0])     # every resample has the same mean
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def client_bootstrap(diffs: np.ndarray, clients: np.ndarray,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Two-stage (cluster) bootstrap of the mean difference: resample clients with
    replacement, then each drawn client's units (folds, seeds) with replacement.

    The folds of one client share its patients and its scanner, so they are not independent
    units; this interval respects that, and is wider than :func:`bootstrap_ci` when clients
    differ. Returns (low, high, p): p is the two-sided bootstrap p-value, twice the smaller
    share of resampled means on either side of 0 (at least 1/resamples). With few clients
    the resampled means take few distinct values, so read it as coarse.
    """
    diffs, clients = np.asarray(diffs, dtype=float), np.asarray(clients)
    if np.all(np.round(diffs - diffs[0], _DIFF_DECIMALS) == 0):
        return float(diffs[0]), float(diffs[0]), (1.0 if diffs[0] == 0 else float("nan"))
    groups = [diffs[clients == c] for c in np.unique(clients)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    means = np.empty(resamples)
    for r in range(resamples):   # unequal group sizes: one resample at a time (10k: ~0.1 s)
        drawn = [groups[g] for g in picks[r]]
        means[r] = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in drawn]).mean()
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    share = min(np.mean(means <= 0), np.mean(means >= 0))
    return float(low), float(high), float(min(1.0, max(2 * share, 1 / resamples)))


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    zero_method='pratt': zero differences keep their place in the ranking (then are dropped),
    which is more conservative than discarding them first ('wilcox'). All differences zero ->
    1.0 (no evidence of any difference); a single pair -> NaN (no test is possible).
    """
    from scipy.stats import wilcoxon

    diffs = np.round(np.asarray(diffs, dtype=float), _DIFF_DECIMALS)
    if len(diffs) < 2:
        return float("nan")
    if np.all(diffs == 0):
        return 1.0
    return float(wilcoxon(diffs, zero_method="pratt").pvalue)


def _units_text(units: pd.DataFrame, limit: int = 3) -> str:
    shown = [f"(client {c}, fold {f}, seed {s})" for c, f, s in
             units[UNIT_COLUMNS].itertuples(index=False)][:limit]
    more = f" and {len(units) - limit} more" if len(units) > limit else ""
    return ", ".join(shown) + more


def paired_differences(results: pd.DataFrame, reference: str = "fcl",
                       metric: str = "dice_mean") -> pd.DataFrame:
    """Reference minus each other method, paired over (client, fold, seed), per mode and N.

    Columns: ``PAIRED_COLUMNS``. mean_diff > 0 means the reference is better. The CI is a
    percentile bootstrap (``BOOTSTRAP_RESAMPLES`` resamples of the units, fixed seed, so the
    table is reproducible) that treats units as independent, although the folds of one
    client share its patients; p_value: see ``wilcoxon_p``. The ``client_*`` columns resample
    clients, then their folds (:func:`client_bootstrap`): the interval to quote. ``upper_bound`` rows are left
    out (their N is the whole training set). A (mode, N) that one of the two methods was not
    run at is not compared; those settings are listed in ``table.attrs['not_compared']``.
    A unit run by one method and not by the other raises ConfigError naming it.
    """
    client_means(results, metric)                   # validates the metric
    if reference == UPPER_BOUND:
        raise ConfigError(f"report: --reference {UPPER_BOUND} cannot be compared pairwise "
                          f"(its N is the whole training set)")
    results = with_seed(results)
    results = results[results["method"] != UPPER_BOUND]
    methods = _method_order(results["method"])
    if reference not in methods:
        raise ConfigError(f"report: reference method '{reference}' not in the results "
                          f"(methods: {', '.join(methods) or 'none'})")
    rows, not_compared = [], []
    for mode in [m for m in FINETUNE_MODES if m in set(results["finetune_mode"])]:
        in_mode = results[results["finetune_mode"] == mode]
        for n in sorted(in_mode["n_labeled"].unique()):
            setting = in_mode[in_mode["n_labeled"] == n]
            ref = setting[setting["method"] == reference].set_index(UNIT_COLUMNS)[metric]
            for method in methods:
                if method == reference:
                    continue
                other = setting[setting["method"] == method].set_index(UNIT_COLUMNS)[metric]
                if ref.empty or other.empty:
                    if not (ref.empty and other.empty):
                        absent = reference if ref.empty else method
                        not_compared.append(f"{method} at {mode} N={n} ({absent} has no rows)")
                    continue
                _check_same_units(ref, other, reference, method, mode, n)
                other = other.reindex(ref.index)
                diffs = (ref - other).to_numpy(float)
                low, high = bootstrap_ci(diffs)
                clients = ref.index.get_level_values("client").to_numpy()
                c_low, c_high, c_p = client_bootstrap(diffs, clients)
                rows.append({"finetune_mode": mode, "n_labeled": int(n), "reference": reference,
                             "method": method, "n_pairs": len(diffs),
                             "reference_mean": float(ref.mean()),
                             "method_mean": float(other.mean()),
                             "mean_diff": float(diffs.mean()), "ci_low": low, "ci_high": high,
                             "p_value": wilcoxon_p(diffs),
                             "n_clients": len(set(clients.tolist())), "client_ci_low": c_low,
                             "client_ci_high": c_high, "client_p_value": c_p})
    table = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    table.attrs["not_compared"] = not_compared
    table.attrs["metric"] = metric
    return table


def _check_same_units(ref: pd.Series, other: pd.Series, reference: str, method: str,
                      mode: str, n: int) -> None:
    """ConfigError unless both methods were run on the same (client, fold, seed) units."""
    for name, values in ((reference, ref), (method, other)):
        twice = values.index[values.index.duplicated()]
        if len(twice):
            raise ConfigError(f"report: {name} has several rows for {mode} N={n} "
                              f"{_units_text(twice.to_frame(index=False))}")
    only_ref = ref.index.difference(other.index)
    only_other = other.index.difference(ref.index)
    if len(only_ref) or len(only_other):
        parts = []
        if len(only_ref):
            parts.append(f"{method} lacks {_units_text(only_ref.to_frame(index=False))}")
        if len(only_other):
            parts.append(f"{reference} lacks {_units_text(only_other.to_frame(index=False))}")
        raise ConfigError(f"report: unpaired results for {method} vs {reference} at {mode} "
                          f"N={n}: {'; '.join(parts)}")


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _p_text(p: float) -> str:
    if pd.isna(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def paired_markdown(table: pd.DataFrame) -> str:
    """One Markdown table per mode: method, N, pairs, means, difference [95 % CI], p."""
    metric = table.attrs.get("metric", "dice_mean")
    parts = []
    for mode in [m for m in FINETUNE_MODES if m in set(table["finetune_mode"])]:
        rows = table[table["finetune_mode"] == mode]
        reference = rows["reference"].iloc[0]
        cells = pd.DataFrame({
            "N": rows["n_labeled"].to_numpy(),
            "pairs": rows["n_pairs"].to_numpy(),
            f"{reference} mean": [f"{x:.3f}" for x in rows["reference_mean"]],
            "method mean": [f"{x:.3f}" for x in rows["method_mean"]],
            "difference [95% CI]": [f"{_signed(d)} [{_signed(lo)}, {_signed(hi)}]" for d, lo, hi
                                    in zip(rows["mean_diff"], rows["ci_low"], rows["ci_high"])],
            "Wilcoxon p": [_p_text(p) for p in rows["p_value"]],
            "clients": rows["n_clients"].to_numpy(),
            "client-level [95% CI]": [f"[{_signed(lo)}, {_signed(hi)}]" for lo, hi
                                      in zip(rows["client_ci_low"], rows["client_ci_high"])],
            "client-level p": [_p_text(p) for p in rows["client_p_value"]],
        }, index=rows["method"].to_numpy())
        parts.append(f"### {mode} fine-tuning: {reference} minus each method ({metric}, "
                     f"paired over client × fold × seed)\n\n" + to_markdown(cells))
    return "\n".join(parts)


def plot_paired_differences(table: pd.DataFrame, path: str | Path) -> Path:
    """PNG: mean difference with its 95 % CI against N, one marker per method, one panel per
    mode, and a zero line (above it: the reference is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = table.attrs.get("metric", "dice_mean")
    modes = [m for m in FINETUNE_MODES if m in set(table["finetune_mode"])]
    methods = list(dict.fromkeys(table["method"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), sharey=True,
                             squeeze=False)
    width = 0.7 / max(len(methods), 1)              # methods side by side within each N
    for ax, mode in zip(axes[0], modes):
        rows = table[table["finetune_mode"] == mode]
        ns = sorted(rows["n_labeled"].unique())
        for i, method in enumerate(methods):
            sel = rows[rows["method"] == method]
            if sel.empty:
                continue
            x = [ns.index(n) + (i - (len(methods) - 1) / 2) * width for n in sel["n_labeled"]]
            yerr = [sel["mean_diff"] - sel["ci_low"], sel["ci_high"] - sel["mean_diff"]]
            ax.errorbar(x, sel["mean_diff"], yerr=yerr, fmt="o", ms=4, capsize=3, label=method,
                        color=f"C{i % 10}")   # the same colour for a method in every panel
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xticks(range(len(ns)), [str(n) for n in ns])
        ax.set_xlabel("N labeled volumes per client")
        ax.set_title(f"{mode} fine-tuning")
        ax.grid(alpha=0.3)
    reference = table["reference"].iloc[0]
    axes[0][0].set_ylabel(f"{reference} minus method, {metric} (95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:          # a method may be missing from the first panel
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.tight_layout()
    # Outside the panels: with many methods an inside legend hides intervals.
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_paired_report(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """paired_differences.md/.csv/.png under ``out_dir`` (nothing when the table is empty)."""
    if table.empty:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "paired_differences.md", out / "paired_differences.csv"
    md.write_text(f"Paired differences over (client, fold, seed): mean, percentile bootstrap "
                  f"95% CI ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}), two-sided "
                  f"Wilcoxon signed-rank p (zero_method=pratt); client-level: the same mean "
                  f"with a two-stage bootstrap (clients, then their folds) CI and its two-sided "
                  f"bootstrap p, the interval to quote (a client's folds share its patients)"
                  f"\n\n" + paired_markdown(table))
    table.to_csv(csv, index=False, float_format="%.6g")
    return [md, csv, plot_paired_differences(table, out / "paired_differences.png")]


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
