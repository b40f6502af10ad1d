"""Issue 28 point 9: the probes of pre-training variants against a baseline, paired by client.

Each variant is a ``probes.csv`` of a run that differs from the baseline's in one pre-training
key (``probes.only`` runs are the cheap way to make them); every file must hold the same
method, fold and clients. For each probe it prints the variant's mean over clients, its
difference from the baseline with a 95 % BCa bootstrap CI over clients and the exact
client-level sign-flip p (6 clients: at least 0.031), as a Markdown table.

    python experiments/probe_ablations.py --method fcl \\
        --baseline experiments/results/v2/methods64/probes.csv \\
        batch_by_patient=runs/ablate/batch_by_patient/probes.csv views_zoom=runs/ablate/views_zoom/probes.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fcl_ray.methods.probes import PROBES
from fcl_ray.statistics import bootstrap_ci, sign_flip_p


def per_client(path: Path, method: str) -> pd.DataFrame:
    """client x probe values of ``method`` in one probes.csv (folds averaged per client)."""
    rows = pd.read_csv(path)
    rows = rows[rows["method"] == method]
    if rows.empty:
        raise SystemExit(f"{path}: no probe rows of method '{method}'")
    return rows.pivot_table(index="client", columns="probe", values="value", aggfunc="mean")


def ablation_table(baseline: pd.DataFrame, variants: dict[str, pd.DataFrame]) -> str:
    """Markdown: one row per variant, one cell per probe: mean, difference [CI], p."""
    probes = [p for p in PROBES if p in baseline.columns]
    head = "| variant | " + " | ".join(probes) + " |"
    lines = [head, "|" + "---|" * (len(probes) + 1),
             "| baseline | " + " | ".join(f"{baseline[p].mean():.3f}" for p in probes) + " |"]
    for name, table in variants.items():
        if sorted(table.index) != sorted(baseline.index):
            raise SystemExit(f"{name}: clients {sorted(table.index)} are not the baseline's "
                             f"{sorted(baseline.index)}")
        cells = []
        for probe in probes:
            diffs = (table[probe] - baseline[probe]).to_numpy()
            low, high = bootstrap_ci(diffs)
            p = sign_flip_p(diffs, table.index.to_numpy())
            cells.append(f"{table[probe].mean():.3f} ({diffs.mean():+.3f} "
                         f"[{low:+.3f}, {high:+.3f}], p {p:.2g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the baseline's probes.csv")
    parser.add_argument("--method", default="fcl", help="the method whose rows are compared")
    parser.add_argument("variants", nargs="+", metavar="NAME=PROBES_CSV")
    args = parser.parse_args(argv)
    variants = {}
    for spec in args.variants:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            print(f"probe_ablations: '{spec}' is not NAME=PROBES_CSV", file=sys.stderr)
            return 2
        variants[name] = per_client(Path(path), args.method)
    print(ablation_table(per_client(args.baseline, args.method), variants), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
