"""Issue 28's checks of a benchmark, in the order they must hold, before any method comparison.

1. shortcut: a slice's base-to-apex partition predicted from 3 global intensity statistics
   (mean, fraction > 0.6, fraction > 0.8 of the normalised slice) for unseen patients: at most
   40 % with 4 partitions (chance 25 %). Printed beside the same probe on the true structure
   areas (how much position the anatomy holds) and on 12x12 pixels, for the config's phantom
   and for v1 at the same settings. Needs no training: seconds.
2. calibration (from results rows): local random init at N=1 is 35-50 % of its N=8 value, and
   the local upper bound (the ``upper_bound`` rows, else the largest N) is at least 0.80.
3. the gate: supervised_encoder minus random init at local N=1 is at least +0.08 Dice with a
   client-level 95 % CI above 0.

    .venv/bin/python experiments/phantom_checks.py --config experiments/benchmark_v2.yaml \\
        [--results runs/v2_calib/results.csv runs/v2_gate/results.csv] [--seeds 0 1 2] \\
        [--baseline runs/before_the_change/results.csv]

``--baseline``: calibration rows of the same seeds and sites before a phantom change; the
change's paired effect on N=1, N=8 and the ratio is printed with intervals over the sites.

Exit code 0 whatever the outcome (it reports; the reading is in experiments/results/v2/).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a source checkout

from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.errors import FclRayError  # noqa: E402
from fcl_ray.data import load_client_volumes, patient_of  # noqa: E402
from fcl_ray.data.shortcut import (global_statistics, probe_accuracy,  # noqa: E402
                                   structure_areas)
from fcl_ray.data.slices import volumes_to_slices  # noqa: E402
from fcl_ray.report import to_markdown  # noqa: E402
from fcl_ray.results import read_results_csv  # noqa: E402
from fcl_ray.statistics import (bootstrap_ci, control_gate, paired_ci,  # noqa: E402
                                positive_control)

SHORTCUT_MAX = 0.40
RATIO_RANGE = (0.35, 0.50)
UPPER_BOUND_MIN = 0.80


def slices_of(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels, partitions and patient ids of the labeled slices of every site."""
    images, labels, parts, patients = [], [], [], []
    for site in range(cfg.data.clients):
        vols = [v for v in load_client_volumes(cfg, site) if v.label is not None]
        s = volumes_to_slices([v.image for v in vols], [v.label for v in vols],
                              cfg.data.partitions, cfg.data.normalise)
        ids = [patient_of(v.volume_id) for v in vols]
        images.append(s.images[:, 0].numpy())
        labels.append(s.labels.numpy())
        parts.append(s.partition.numpy())
        patients.append(np.array([ids[i] for i in s.volume.tolist()]))
    return tuple(np.concatenate(x) for x in (images, labels, parts, patients))


def shortcut_rows(cfg, seeds: list[int]) -> pd.DataFrame:
    """The partition probes for the config's phantom and v1, one row per (phantom, seed)."""
    rows = []
    phantoms = [cfg.data.phantom] + [p for p in ("v1",) if p != cfg.data.phantom]
    for phantom in phantoms:
        for seed in seeds:
            run = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, seed=seed),
                                      data=dataclasses.replace(cfg.data, phantom=phantom,
                                                               site_skew=(cfg.data.site_skew
                                                                          if phantom == "v2"
                                                                          else None)))
            x, y, part, patient = slices_of(run)
            side = x.shape[-1] // 12 * 12
            pixels = x[:, :side, :side].reshape(len(x), 12, side // 12, 12, side // 12)
            k = cfg.data.partitions
            rows.append({"phantom": phantom, "seed": seed, "slices": len(x),
                         "three_statistics": probe_accuracy(global_statistics(x), part, patient, k),
                         "structure_areas": probe_accuracy(structure_areas(y), part, patient, k),
                         "pixels_12x12": probe_accuracy(pixels.mean((2, 4)).reshape(len(x), -1),
                                                        part, patient, k)})
    return pd.DataFrame(rows)


def calibration(results: pd.DataFrame) -> dict:
    """Local random init at N=1 and N=8 (mean over clients and folds), their ratio, and the
    local upper bound (``upper_bound`` rows, else random init at the largest N)."""
    local = results[results["finetune_mode"] == "local"]
    rand = local[local["method"] == "random"].groupby("n_labeled")["dice_mean"].mean()
    upper = local[local["method"] == "upper_bound"]["dice_mean"]
    out = {"random_n1": rand.get(1, np.nan), "random_n8": rand.get(8, np.nan)}
    out["ratio"] = out["random_n1"] / out["random_n8"]
    out["upper_bound"] = float(upper.mean()) if len(upper) else float(rand.iloc[-1]) \
        if len(rand) else np.nan
    out["upper_from"] = "upper_bound rows" if len(upper) else \
        (f"random init at N={rand.index[-1]}" if len(rand) else "-")
    return out


def _ratio(n1: np.ndarray, n8: np.ndarray) -> float:
    """The calibration ratio of a set of sites: mean N=1 Dice over mean N=8 Dice."""
    return float(np.mean(n1) / np.mean(n8))


def ratio_interval(results: pd.DataFrame, level: float = 0.95) -> tuple[float, float, int]:
    """A bootstrap interval of the calibration ratio (mean N=1 over mean N=8 of local random
    init), resampling sites (a seed's client, its folds together) that have both N; and how
    many sites that is. One seed's 6 sites move the ratio by several points, so the check is
    read with it."""
    table = _site_table(results)
    if table.shape[1] < 2 or len(table) < 2:
        return np.nan, np.nan, len(table)
    low, high = paired_ci(table[1].to_numpy(), table[8].to_numpy(), statistic=_ratio,
                          level=level)
    return low, high, len(table)


def _read_rows(paths: list[str]) -> pd.DataFrame:
    """The rows of several results.csv files. Runs of the same seed reproduce each other's
    rows bit for bit (e.g. a 3-site calibration run and the 6-site gate run share clients
    0-2): keep one copy of each."""
    results = pd.concat([read_results_csv(Path(p)) for p in paths], ignore_index=True)
    key = ["method", "finetune_mode", "n_labeled", "client", "fold", "seed"]
    return results.drop_duplicates(subset=key + ["dice_mean"])


def _site_table(results: pd.DataFrame) -> pd.DataFrame:
    """Local random init Dice per site (a seed's client, folds averaged): columns N=1, N=8."""
    local = results[(results["finetune_mode"] == "local") & (results["method"] == "random")]
    local = local[local["n_labeled"].isin([1, 8])]
    seeds = local["seed"] if "seed" in local.columns else pd.Series(0, index=local.index)
    return local.assign(seed=seeds).pivot_table(index=["seed", "client"], columns="n_labeled",
                                                values="dice_mean", aggfunc="mean").dropna()


def calibration_change(results: pd.DataFrame, baseline: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A phantom change against the unchanged phantom on the same sites (same seed, client
    and splits): per seed N=1, N=8 and ratio of both, and the pooled differences with BCa
    intervals over the sites both have (a site's four values resampled together)."""
    new = _site_table(results).rename(columns=lambda n: f"N={n} new")
    old = _site_table(baseline).rename(columns=lambda n: f"N={n} baseline")
    both = old.join(new, how="inner")
    if both.empty:
        raise FclRayError("--baseline: no site (seed, client) has local random init at N=1 "
                          "and N=8 in both the results and the baseline")
    n1, n8, b1, b8 = (both[c].to_numpy() for c in ("N=1 new", "N=8 new", "N=1 baseline",
                                                    "N=8 baseline"))
    per_seed = both.groupby(level="seed").mean()
    for which in ("baseline", "new"):
        per_seed[f"ratio {which}"] = per_seed[f"N=1 {which}"] / per_seed[f"N=8 {which}"]
    change = {"sites": len(both),
              "n1": (np.mean(n1 - b1), *bootstrap_ci(n1 - b1)),
              "n8": (np.mean(n8 - b8), *bootstrap_ci(n8 - b8)),
              "ratio": (_ratio(n1, n8) - _ratio(b1, b8),
                        *paired_ci(n1, n8, b1, b8,
                                   statistic=lambda a, b, c, d: _ratio(a, b) - _ratio(c, d)))}
    columns = [f"{c} {which}" for which in ("baseline", "new") for c in ("N=1", "N=8", "ratio")]
    return per_seed[columns], change


def print_calibration_change(results: pd.DataFrame, baseline: pd.DataFrame) -> None:
    per_seed, change = calibration_change(results, baseline)
    print(f"### Against the baseline ({change['sites']} sites in both)\n")
    print(to_markdown(per_seed.round(3).astype(object), index_name="seed"))
    for key, name in (("n1", "N=1"), ("n8", "N=8"), ("ratio", "ratio")):
        mean, low, high = change[key]
        print(f"{name}: new minus baseline {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/benchmark_v2.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--results", nargs="*", default=[])
    parser.add_argument("--baseline", nargs="*", default=[],
                        help="results of the same seeds and sites before a phantom change: "
                             "the calibration's paired change is printed")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    d = cfg.data
    changes = "".join(f", {key} {value}" for key, value in (
        ("motion_ghosts", d.motion_ghosts), ("slice_gain_jitter", d.slice_gain_jitter),
        ("shape_variation", d.shape_variation))
        if value not in (None, 0, 0.0))
    print(f"# Checks of {args.config}: phantom {d.phantom}, {d.clients} sites x "
          f"{d.cases_per_client} patients, {d.image_size} px, noise x{d.noise}, "
          f"site_skew {d.site_skew}{changes}, seeds {args.seeds}\n")
    table = shortcut_rows(cfg, args.seeds)
    print("## 1. Shortcut: partition accuracy for unseen patients (chance "
          f"{1 / d.partitions:.0%})\n")
    shown = table.set_index("phantom").round(3).astype({"seed": int, "slices": int})
    print(to_markdown(shown.astype(object), index_name="phantom"))
    mine = table[table["phantom"] == d.phantom]["three_statistics"]
    print(f"\n{d.phantom}: three statistics {mine.mean():.3f} mean, {mine.max():.3f} worst seed "
          f"-> {'PASS' if mine.max() <= SHORTCUT_MAX else 'FAIL'} (<= {SHORTCUT_MAX:.0%})\n")
    if not args.results:
        return 0
    results = _read_rows(args.results)
    cal = calibration(results)
    low, high = RATIO_RANGE
    print("## 2. Calibration (local)\n")
    print(f"random init N=1 {cal['random_n1']:.3f}, N=8 {cal['random_n8']:.3f}: ratio "
          f"{cal['ratio']:.2f} -> {'PASS' if low <= cal['ratio'] <= high else 'FAIL'} "
          f"({low:.0%}-{high:.0%})")
    ci_low, ci_high, sites = ratio_interval(results)
    if sites >= 2:
        inside = "inside" if low <= ci_low and ci_high <= high else (
            "outside" if ci_high < low or ci_low > high else "across the edge of")
        print(f"ratio 95 % interval [{ci_low:.2f}, {ci_high:.2f}] (bootstrap over {sites} "
              f"sites): {inside} the target")
    if "seed" in results.columns and results["seed"].nunique() > 1:
        for seed, rows in results.groupby("seed"):
            one = calibration(rows)
            print(f"  seed {seed}: N=1 {one['random_n1']:.3f}, N=8 {one['random_n8']:.3f}, "
                  f"ratio {one['ratio']:.2f}")
    print(f"upper bound ({cal['upper_from']}) {cal['upper_bound']:.4f} -> "
          f"{'PASS' if cal['upper_bound'] >= UPPER_BOUND_MIN else 'FAIL'} "
          f"(>= {UPPER_BOUND_MIN})\n")
    if args.baseline:
        print_calibration_change(results, _read_rows(args.baseline))
    print("## 3. The gate (positive control)\n")
    print(control_gate(positive_control(results, pairs="common")).message)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except FclRayError as err:       # a bad config or results file: one line, exit 2
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
