"""Seeds 0-3, fold 0, local N=1, patience 30 / max_steps 2000: FCL pre-trained twice a seed.

Run 0 is the committed FCL of ../patience/seedS_chosen (pretrain.sampler_seed 0); run 1 is
seedS_chosen here (sampler_seed 1: other batches, views and exchanged rows; same data, splits
and initial weights). Writes rows_two_runs.csv with the methods random and local_cl (one run,
from ../patience), fcl_run0, fcl_run1 and fcl_two_runs (a site's two FCL rows averaged), for
`fcl-ray report --reference ... --sites seed_client`, and prints how far one pre-training run
moves a site's Dice. Where the second run's frozen-encoder probes exist (seedS_probes here),
also writes probes_seedS.csv: random init and FCL's first run (../seeds/seedS_probes, seed 0:
../patience/seed0_probes) and fcl_run1, for experiments/probe_pairs.py.

    .venv/bin/python experiments/results/v2/rerun/combine_rows.py
"""
from pathlib import Path

import pandas as pd

from fcl_ray.results import read_results_csv

HERE = Path(__file__).resolve().parent
SEEDS = [s for s in (0, 1, 2, 3) if (HERE / f"seed{s}_chosen" / "results.csv").exists()]
SITE = ["finetune_mode", "n_labeled", "fold", "seed", "client"]
NUMBERS = ["dice_mean", "dice_rv", "dice_myo", "dice_lv", "steps", "best_step", "val_dice"]


def _rows(folder: Path, methods: list[str]) -> pd.DataFrame:
    rows = read_results_csv(folder)      # the project's reader: checks columns and Dice ranges
    keep = ((rows.finetune_mode == "local") & (rows.fold == 0) & (rows.n_labeled == 1)
            & rows.method.isin(methods))
    return rows[keep].copy()


parts = []
for seed in SEEDS:
    committed = _rows(HERE.parent / "patience" / f"seed{seed}_chosen",
                      ["random", "local_cl", "fcl"])
    committed["method"] = committed["method"].replace({"fcl": "fcl_run0"})
    rerun = _rows(HERE / f"seed{seed}_chosen", ["fcl"])
    rerun["method"] = "fcl_run1"
    parts += [committed, rerun]
rows = pd.concat(parts, ignore_index=True)

runs = rows[rows.method.isin(["fcl_run0", "fcl_run1"])]
mean = runs.groupby(SITE, as_index=False)[NUMBERS].mean()
mean["method"] = "fcl_two_runs"
mean["candidate"] = "two pre-training runs averaged"
rows = pd.concat([rows, mean], ignore_index=True)
rows.to_csv(HERE / "rows_two_runs.csv", index=False)

print(f"seeds {SEEDS}; mean over sites:")
print(rows.groupby("method", sort=False)[["dice_mean", "val_dice", "steps", "best_step"]]
      .mean().round(3).to_string())
wide = runs.pivot_table(index=SITE, columns="method", values="dice_mean")
change = wide["fcl_run1"] - wide["fcl_run0"]
print(f"\nrun 1 - run 0, per site: mean {change.mean():+.3f}, SD {change.std():.3f} "
      f"(one run's own SD at a site: {change.std() / 2 ** 0.5:.3f}), "
      f"largest |change| {change.abs().max():.3f}, sites {len(change)}")
per_seed = change.groupby(level="seed").mean()
print("per seed, mean change: " + ", ".join(f"seed {s} {v:+.3f}" for s, v in per_seed.items()))

RUN0_PROBES = {0: HERE.parent / "patience" / "seed0_probes"}
for seed in SEEDS:
    rerun_probes = HERE / f"seed{seed}_probes" / "probes.csv"
    if not rerun_probes.exists():
        continue
    first = RUN0_PROBES.get(seed, HERE.parent / "seeds" / f"seed{seed}_probes") / "probes.csv"
    committed = pd.read_csv(first)
    committed = committed[committed.method.isin(["random", "fcl"])]
    committed["method"] = committed["method"].replace({"fcl": "fcl_run0"})
    second = pd.read_csv(rerun_probes)
    second = second[second.method == "fcl"].assign(method="fcl_run1")
    pd.concat([committed, second]).to_csv(HERE / f"probes_seed{seed}.csv", index=False)
    print(f"wrote probes_seed{seed}.csv")
