"""FCL minus another method against a regime: training patients per site (issue 20, point 4)
or the phantom's data.site_skew (issue 28, point 7, ``--x site_skew``).

    python experiments/data_per_site_plot.py runs/data_per_site/p2/results.csv:2 \\
        runs/data_per_site/p4/results.csv:4 runs/data_per_site/p8/results.csv:8 \\
        --out experiments/results/data_per_site

Each input is a results.csv and its regime value (patients per site, or site_skew). Per regime and fine-tuning mode, the
paired differences of fcl_ray.statistics (FCL minus each method over (client, fold, seed), with
the client-level bootstrap CI) are stacked into ``regime.csv``/``regime.md`` and plotted
(``regime.png``: FCL minus fcl_no_exchange, and minus Local CL, against patients per site).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fcl_ray.config import ConfigError
from fcl_ray.report import to_markdown
from fcl_ray.results import read_results_csv
from fcl_ray.statistics import paired_differences


X_LABELS = {"patients_per_site": "training patients per site",
            "site_skew": "data.site_skew (small: each site mostly one phenotype)"}


def regime_table(inputs: list[tuple[str, float]], reference: str = "fcl",
                 x: str = "patients_per_site") -> pd.DataFrame:
    """The paired differences of every regime, with a column ``x`` holding its value."""
    parts = []
    for path, value in inputs:
        table = paired_differences(read_results_csv(path), reference=reference)
        parts.append(table.assign(**{x: value}))
    return pd.concat(parts, ignore_index=True)


def plot_regime(table: pd.DataFrame, path: Path, x: str = "patients_per_site") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(table["finetune_mode"]))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4), sharey=True,
                             squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = table[table["finetune_mode"] == mode]
        for i, method in enumerate(dict.fromkeys(rows["method"])):
            sel = rows[rows["method"] == method].sort_values(x)
            at = sel[x] * (1 + 0.04 * (i - 0.5))   # side by side
            ax.errorbar(at, sel["mean_diff"], fmt="o-", capsize=3, color=f"C{i}",
                        yerr=[sel["mean_diff"] - sel["client_ci_low"],
                              sel["client_ci_high"] - sel["mean_diff"]],
                        label=f"{sel['reference'].iloc[0]} minus {method}")
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xscale("log", base=2 if x == "patients_per_site" else 10)
        ticks = sorted(rows[x].unique())
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel(X_LABELS.get(x, x))
        ax.set_title(f"{mode} fine-tuning, N=1")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("Dice difference (client-level 95% CI)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="RESULTS_CSV:VALUE (patients per site, or "
                        "site_skew with --x site_skew)")
    parser.add_argument("--x", default="patients_per_site", choices=sorted(X_LABELS))
    parser.add_argument("--reference", default="fcl")
    parser.add_argument("--out", required=True, help="folder for regime.csv/.md/.png")
    args = parser.parse_args(argv)
    try:
        inputs = []
        for item in args.inputs:
            path, _, value = item.rpartition(":")
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not path or not number > 0 or number == float("inf"):
                raise ConfigError(f"input '{item}': expected RESULTS_CSV:VALUE with a finite "
                                  f"VALUE > 0 ({args.x})")
            inputs.append((path, int(number) if number.is_integer() else number))
        table = regime_table(inputs, args.reference, args.x)
    except ConfigError as err:
        print(f"data_per_site_plot: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "regime.csv", index=False, float_format="%.6g")
    shown = table.assign(difference=[f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                     zip(table.mean_diff, table.client_ci_low,
                                         table.client_ci_high)])
    cols = [args.x, "finetune_mode", "n_labeled", "method", "n_pairs",
            "reference_mean", "method_mean", "difference", "client_p_value"]
    (out / "regime.md").write_text(
        f"{args.reference} minus each method, paired over (client, fold, seed); "
        f"client-level 95% CI and bootstrap p\n\n"
        + to_markdown(shown[cols].round(3).set_index(args.x), X_LABELS[args.x]))
    print(f"wrote {plot_regime(table, out / 'regime.png', args.x)}, regime.csv, regime.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
