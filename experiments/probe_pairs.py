"""Paired differences of frozen-encoder probes (probes.csv) between methods, over sites.

`fcl-ray report` prints a run's probe table (mean and spread over clients); this adds what
the fine-tuning rows get: one method minus each other, paired over (client, fold, seed), with
the client-level 95 % CI and the exact (or sampled) sign-flip p of `fcl_ray.statistics`, for
each probe. Several probes.csv files pool: pass each with the seed it ran at (the file has no
seed column), e.g. the four seeds of experiments/results/v2:

    .venv/bin/python experiments/probe_pairs.py 0=runs/length64/s600/probes.csv \\
        1=runs/seed1_probes/probes.csv --folds 0 --sites seed_client

``--sites seed_client`` makes each (seed, client) an independent site (right for phantom
seeds, which draw new sites); ``client`` (the default) resamples a client id's seeds together.
For ``position_dt`` lower is better, so a negative difference favours the reference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a source checkout

from fcl_ray.config import SITE_UNITS, ConfigError  # noqa: E402
from fcl_ray.report import to_markdown  # noqa: E402
from fcl_ray.results import read_probes_csv  # noqa: E402
from fcl_ray.statistics import paired_differences  # noqa: E402


def read_probes(seeded_paths: list[str], folds: list[int] | None = None) -> pd.DataFrame:
    """``SEED=PATH`` probes.csv files as one frame with a ``seed`` column (``folds``: keep
    those folds only). A malformed argument or an unreadable file is one ConfigError."""
    frames = []
    for item in seeded_paths:
        seed, sep, path = item.partition("=")
        if not sep or not seed.strip().lstrip("-").isdigit():
            raise ConfigError(f"'{item}': expected SEED=PATH to a probes.csv, e.g. 0=runs/a/probes.csv")
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no such probes.csv")
        frames.append(read_probes_csv(path).assign(seed=int(seed)))   # checked as report reads it
    probes = pd.concat(frames, ignore_index=True)
    return probes[probes["fold"].isin(folds)] if folds else probes


def probe_pairs(probes: pd.DataFrame, reference: str, sites: str = "client") -> dict[str, pd.DataFrame]:
    """Per probe: ``reference`` minus each other method (``paired_differences`` columns),
    paired over the (client, fold, seed) units both have."""
    tables = {}
    for probe, rows in probes.groupby("probe", sort=True):
        # In the shape of result rows (one mode, one N) so the fine-tuning statistics apply.
        as_results = rows.rename(columns={"value": "dice_mean"}).assign(
            finetune_mode="local", n_labeled=1)
        tables[probe] = paired_differences(as_results, reference=reference, pairs="common",
                                           sites=sites)
    return tables


def pairs_markdown(table: pd.DataFrame) -> str:
    """One probe's table: pairs, means, the difference with its client-level 95 % CI, the
    sign-flip p and the number of independent sites."""
    cells = pd.DataFrame({
        "pairs": table["n_pairs"].astype(int).to_numpy(),
        "reference mean": [f"{x:.3f}" for x in table["reference_mean"]],
        "method mean": [f"{x:.3f}" for x in table["method_mean"]],
        "difference [client-level 95% CI]": [
            f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi
            in zip(table["mean_diff"], table["client_ci_low"], table["client_ci_high"])],
        "sign-flip p": ["<0.001" if p < 0.001 else f"{p:.3f}" for p in table["sign_flip_p"]],
        "sites": table["n_clients"].astype(int).to_numpy(),
    }, index=table["method"].to_numpy())
    return to_markdown(cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probes", nargs="+", metavar="SEED=PATH", help="probes.csv files")
    parser.add_argument("--reference", action="append",
                        help="the method each other is subtracted from (repeatable; default fcl)")
    parser.add_argument("--folds", type=int, nargs="*", help="keep these folds only")
    parser.add_argument("--sites", choices=SITE_UNITS, default="client")
    args = parser.parse_args(argv)
    try:
        probes = read_probes(args.probes, args.folds)
        for reference in args.reference or ["fcl"]:
            for probe, table in probe_pairs(probes, reference, args.sites).items():
                print(f"\n### {probe}: {reference} minus each method\n")
                print(pairs_markdown(table))
    except ConfigError as err:
        print(f"probe_pairs: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
