"""The confirmatory set of issue 28 (rule.md): FCL - random init at local N=1 on seeds 5-10.

Pools the chosen rows of the seeds run so far (seedS_chosen, each run as ../seeds45/seed4:
one pre-training run a seed, fold 0, local N=1, patience 30 / 2000, rates 0.1 and 1 chosen on
validation) into rows.csv for `fcl-ray report --reference fcl --sites seed_client`, says which
look of the rule the rows allow (look 1: seeds 5-7; look 2: seeds 5-10) and its p bound, and
prints the per-seed means, the exact sign-flip p of the three differences (up to 20 sites)
and the health of each pre-training at its last round.

    .venv/bin/python experiments/results/v2/confirm/combine_rows.py
"""
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import permutation_test

from fcl_ray.results import read_results_csv

HERE = Path(__file__).resolve().parent
METHODS = ["random", "local_cl", "fcl"]
LOOKS = {1: ([5, 6, 7], 0.0052), 2: ([5, 6, 7, 8, 9, 10], 0.048)}   # rule.md, 19:43 amendment


def _rows(folder: Path) -> pd.DataFrame:
    rows = read_results_csv(folder)      # the project's reader: checks columns and Dice ranges
    keep = ((rows.finetune_mode == "local") & (rows.fold == 0) & (rows.n_labeled == 1)
            & rows.method.isin(METHODS))
    return rows[keep].copy()


def _last_health(log: Path) -> dict[str, str]:
    """The last "health (mean over clients)" line of each pre-training method in a run log."""
    last, method = {}, None
    for line in log.read_text().splitlines():
        started = re.search(r"\[(\w+)\] pre-training", line)
        method = started.group(1) if started else method
        if "health (mean over clients)" in line:
            last[method] = line.split("health (mean over clients): ")[1]
    return last


def _exact_sign_flip_p(differences: np.ndarray) -> float:
    """Two-sided sign-flip p over all 2^n sign patterns, by SciPy as fcl_ray.statistics does
    (whose report enumerates up to 16 sites and draws 10,000 patterns above)."""
    return float(permutation_test((differences,), lambda x, axis: np.mean(x, axis=axis),
                                  vectorized=True, permutation_type="samples",
                                  alternative="two-sided", n_resamples=np.inf).pvalue)


seeds = [s for s in LOOKS[2][0] if (HERE / f"seed{s}_chosen" / "results.csv").exists()]
if not seeds:
    raise SystemExit("no seed of the confirmatory set has been chosen yet")
rows = pd.concat([_rows(HERE / f"seed{s}_chosen") for s in seeds], ignore_index=True)
rows.to_csv(HERE / "rows.csv", index=False)

look = max((n for n, (needed, _) in LOOKS.items() if set(needed) <= set(seeds)), default=None)
if look is None:
    print(f"seeds {seeds}: before look 1 (seeds 5-7), per-seed figures are descriptive only")
else:
    print(f"seeds {seeds}: look {look}; FCL - random init is confirmed if the sign-flip p < "
          f"{LOOKS[look][1]} and the mean > 0 (rule.md)")
print("local N=1, fold 0, mean test Dice over a seed's sites:")
print(rows.pivot_table(index="seed", columns="method", values="dice_mean")
      .reindex(columns=METHODS).round(3).to_string())
site = rows.pivot_table(index=["seed", "client"], columns="method", values="dice_mean")
if len(site) <= 20:     # 2^20 patterns at most; look 2's 36 sites use the report's p
    for a, b in (("fcl", "random"), ("fcl", "local_cl"), ("local_cl", "random")):
        diff = (site[a] - site[b]).to_numpy()
        print(f"{a} - {b}: {diff.mean():+.3f} over {len(diff)} sites, {(diff > 0).sum()} above 0, "
              f"exact two-sided sign-flip p {_exact_sign_flip_p(diff):.4f}")
print("\nhealth at the last pre-training round (mean over clients):")
for seed in seeds:
    log = HERE / f"seed{seed}_s01" / "run.log"
    for name, figures in (_last_health(log) if log.exists() else {}).items():
        print(f"  seed {seed} {name}: {figures}")
