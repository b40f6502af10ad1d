"""Results tables and plots with pandas/matplotlib: per-client rows -> the paper's tables.

The rows come from :mod:`fcl_ray.results` (reading and checking ``results.csv`` files and
MLflow runs). The paper's two tables (local and federated fine-tuning) have one row per
method and one column per N; a cell is the mean ± std over clients of the Dice after
averaging the folds of each client.

Beside the tables, the paired differences of :mod:`fcl_ray.statistics` (a reference method
minus each other method over (client, fold, seed)) as Markdown, CSV and a plot, and the
positive control's section (supervised_encoder minus random init, and its gate).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fcl_ray.config import FINETUNE_MODES, ConfigError
from fcl_ray.data.labels import MEAN_COLUMN
from fcl_ray.results import UPPER_BOUND, _method_order
from fcl_ray.statistics import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EXACT_SIGN_FLIP_CLIENTS,
                                ControlGate, by_seed_site, client_means, sign_flip_min_p)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The column of the upper bound's cell (its N is the whole training set): "all labels".
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
    # The classes in the order of the file (label order), their mean last.
    return table[[c for c in dice_cols if c != MEAN_COLUMN] + [c for c in dice_cols if c == MEAN_COLUMN]]


def format_table(results: pd.DataFrame) -> str:
    """A plain-text table for the terminal."""
    table = summary_table(results).rename(columns=lambda c: c.replace("dice_", ""))
    return table.to_string()


# ----------------------------------------------------------------------------- tables
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
def dice_vs_n_figure(results: pd.DataFrame, metric: str = "dice_mean") -> Figure:
    """metric against N per method (mean ± std over clients), one panel per mode, as a
    matplotlib Figure (no pyplot, no backend switch: a notebook's plots stay inline)."""
    from matplotlib.figure import Figure

    modes = [m for m in FINETUNE_MODES if m in set(results["finetune_mode"])]
    fig = Figure(figsize=(5.5 * len(modes), 4.2))
    axes = fig.subplots(1, len(modes), sharey=True, squeeze=False)
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
        ax.set_xlabel("N labeled patients per client")
        ax.set_title(f"{mode} fine-tuning")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric} (mean ± std over clients)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_dice_vs_n(results: pd.DataFrame, path: str | Path, metric: str = "dice_mean") -> Path:
    """PNG of :func:`dice_vs_n_figure`."""
    path = Path(path)
    dice_vs_n_figure(results, metric).savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------- paired differences
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
            _site_word(table): rows["n_clients"].to_numpy(),
            "client-level [95% CI]": [f"[{_signed(lo)}, {_signed(hi)}]" for lo, hi
                                      in zip(rows["client_ci_low"], rows["client_ci_high"])],
            "client bootstrap p": [_p_text(p) for p in rows["client_p_value"]],
            "sign-flip p (smallest possible)": [
                f"{_p_text(p)} ({_p_text(m)})"
                for p, m in zip(rows["sign_flip_p"], rows["sign_flip_min_p"])],
        }, index=rows["method"].to_numpy())
        parts.append(f"### {mode} fine-tuning: {reference} minus each method ({metric}, "
                     f"paired over client × fold × seed)\n\n" + to_markdown(cells))
    return "\n".join(parts) + "\n" + what_to_quote(table)


def _site_word(table: pd.DataFrame) -> str:
    """The paired table's name for its independent units."""
    return "sites (seed, client)" if by_seed_site(table) else "clients"


def what_to_quote(table: pd.DataFrame) -> str:
    """Which figures of the paired table to quote, why, and the smallest p the exact
    sign-flip test can reach with the table's numbers of clients (or sites)."""
    unit = "sites" if by_seed_site(table) else "clients"
    floors = ", ".join(f"{c} {unit}: 2/2^{c} = {sign_flip_min_p(c):.3g}"
                       for c in sorted(set(table["n_clients"].astype(int))))
    if by_seed_site(table):
        return ("Quote the client-level 95% CI and the sign-flip p. Read with --sites "
                "seed_client: every seed drew its own sites (the synthetic phantom), so each "
                "(seed, client) is an independent site and its folds are resampled and flipped "
                "together. Data whose client ids are the same hospitals in every seed must use "
                "--sites client. The sign-flip test enumerates all 2^C sign patterns of C sites "
                f"up to {EXACT_SIGN_FLIP_CLIENTS} (smallest attainable p 2/2^C: {floors}) and "
                f"draws {BOOTSTRAP_RESAMPLES} patterns at random above that.\n")
    return ("Quote the client-level 95% CI and the sign-flip p. A client's folds share its "
            "patients and scanner, so the clients, not the (client, fold, seed) pairs, are the "
            "independent units: the per-pair BCa CI and Wilcoxon p treat correlated pairs as "
            "independent and overstate precision, and the client bootstrap p can fall below "
            "what so few clients can show. The exact sign-flip test enumerates all 2^C sign "
            f"patterns of the C clients; its smallest attainable p is 2/2^C ({floors}), so a "
            "p at that floor is the strongest evidence this run can give.\n")


def ranking_line(results: pd.DataFrame, reference: str = "fcl", baseline: str = "random",
                 mode: str = "local") -> str:
    """One line under a run's table: ``reference`` minus ``baseline`` at the smallest N of
    ``mode`` with its client-level 95 % CI, and whether a run of this size can rank the two
    (its CI excludes 0). Empty when either method has no rows in ``mode``."""
    from fcl_ray.statistics import paired_differences

    rows = results[results["method"].isin([reference, baseline])
                   & (results["finetune_mode"] == mode)]
    if set(rows["method"]) != {reference, baseline}:
        return ""
    table = paired_differences(rows, reference, pairs="common")
    if table.empty:
        return ""
    r = table.sort_values("n_labeled").iloc[0]
    low, high = r["client_ci_low"], r["client_ci_high"]
    figures = (f"{reference} minus {baseline} ({mode}, N={int(r['n_labeled'])}): "
               f"{_signed(r['mean_diff'])}, client-level 95% CI [{_signed(low)}, "
               f"{_signed(high)}], sign-flip p {_p_text(r['sign_flip_p'])} (at least "
               f"{_p_text(r['sign_flip_min_p'])}) over {int(r['n_clients'])} clients, "
               f"{int(r['n_pairs'])} pairs")
    if pd.isna(low) or low <= 0 <= high:
        return (f"{figures}\nA run of this size cannot rank them: the CI contains 0. Ranking "
                f"needs more clients and folds, and a benchmark whose positive control passes "
                f"its gate (experiments/benchmark_v2.yaml).")
    return (f"{figures}\nThe CI excludes 0 at this size; read it beside the positive control "
            f"(supervised_encoder) before calling either encoder better.")


def plot_paired_differences(table: pd.DataFrame, path: str | Path) -> Path:
    """PNG: mean difference with its 95 % CI against N, one marker per method, one panel per
    mode, and a zero line (above it: the reference is better)."""
    from matplotlib.figure import Figure

    metric = table.attrs.get("metric", "dice_mean")
    modes = [m for m in FINETUNE_MODES if m in set(table["finetune_mode"])]
    methods = list(dict.fromkeys(table["method"]))
    fig = Figure(figsize=(5.5 * len(modes), 4.2))
    axes = fig.subplots(1, len(modes), sharey=True, squeeze=False)
    width = 0.7 / max(len(methods), 1)              # methods side by side within each N
    for ax, mode in zip(axes[0], modes):
        rows = table[table["finetune_mode"] == mode]
        ns = sorted(rows["n_labeled"].unique())
        for i, method in enumerate(methods):
            sel = rows[rows["method"] == method]
            if sel.empty:
                continue
            x = [ns.index(n) + (i - (len(methods) - 1) / 2) * width for n in sel["n_labeled"]]
            # Clipped at 0: equal differences give a CI equal to the mean up to rounding,
            # and matplotlib refuses a negative error bar.
            yerr = [(sel["mean_diff"] - sel["ci_low"]).clip(lower=0),
                    (sel["ci_high"] - sel["mean_diff"]).clip(lower=0)]
            ax.errorbar(x, sel["mean_diff"], yerr=yerr, fmt="o", ms=4, capsize=3, label=method,
                        color=f"C{i % 10}")   # the same colour for a method in every panel
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xticks(range(len(ns)), [str(n) for n in ns])
        ax.set_xlabel("N labeled patients per client")
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
    return path


def write_paired_report(table: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """paired_differences.md/.csv/.png under ``out_dir`` (nothing when the table is empty)."""
    if table.empty:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "paired_differences.md", out / "paired_differences.csv"
    md.write_text(f"Paired differences over (client, fold, seed): mean, BCa bootstrap 95% CI "
                  f"(scipy.stats.bootstrap, {BOOTSTRAP_RESAMPLES} resamples, seed "
                  f"{BOOTSTRAP_SEED}), two-sided Wilcoxon signed-rank p (zero_method=pratt); "
                  f"client-level: the same mean with a two-stage bootstrap (clients, then "
                  f"their folds) CI and its two-sided bootstrap p, and the exact two-sided "
                  f"sign-flip permutation p over clients (scipy.stats.permutation_test)"
                  f"\n\n" + paired_markdown(table))
    table.to_csv(csv, index=False, float_format="%.6g")
    return [md, csv, plot_paired_differences(table, out / "paired_differences.png")]


# ----------------------------------------------------------------------------- positive control
def positive_control_markdown(table: pd.DataFrame, gate: ControlGate) -> str:
    """The "Positive control" section: the paired tables of supervised_encoder minus random
    init, then the gate's line."""
    return ("## Positive control\n\nCan this benchmark detect a good encoder? The encoder of a "
            "U-Net trained with labels on patients outside the sites, fine-tuned like every "
            "encoder, minus random init.\n\n" + paired_markdown(table) + "\n" + gate.message
            + "\n")


def write_positive_control(text: str, out_dir: str | Path) -> Path:
    """positive_control.md under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "positive_control.md"
    path.write_text(text)
    return path
# ----------------------------------------------------------------------------- probes
PROBE_NOTE = ("partition_accuracy: chance 1/partitions; position_dt: mean |t - t'| of the "
              "nearest other-site slice, lower is better, a random one gives about 1/3; "
              "position_same_partition: chance about 1/partitions; segmentation_dice: a "
              "linear read-out of the frozen encoder")


def probe_table(probes: pd.DataFrame) -> pd.DataFrame:
    """Frozen-encoder probes as 'mean ± std' cells: rows = methods, columns = probes; the
    folds of each client averaged, then mean ± std over clients (as the Dice tables)."""
    per_client = probes.groupby(["method", "probe", "client"], sort=False)["value"].mean()
    stats = per_client.groupby(["method", "probe"], sort=False).agg(
        mean="mean", std=lambda s: s.std(ddof=0))
    cells = pd.Series([f"{m:.3f} ± {s:.3f}" for m, s in zip(stats["mean"], stats["std"])],
                      index=stats.index).unstack("probe")
    columns = list(dict.fromkeys(probes["probe"]))
    return cells.reindex(index=_method_order(probes["method"]), columns=columns).fillna("—")


def render_probe_report(probes: pd.DataFrame) -> str:
    """The probe table as Markdown, with what each probe's chance level is."""
    return ("### frozen-encoder probes (mean ± std over clients, folds averaged per client)\n\n"
            + to_markdown(probe_table(probes)) + f"\n{PROBE_NOTE}\n")


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
