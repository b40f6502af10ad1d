"""Seeds 1-3, fold 0, local N=1: the chosen rows at early-stopping patience 10 / max_steps 800
(../seeds/seedS_chosen) and at patience 30 / max_steps 2000 (seedS_chosen here), methods
renamed *_p10 / *_p30, into rows_p10_and_p30.csv for `fcl-ray report --reference ...
--sites seed_client`. The control ran at patience 30 for seed 1 only; it is kept for seed 1.

    .venv/bin/python experiments/results/v2/patience/combine_rows.py
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SEEDS = (1, 2, 3)
METHODS = ["random", "local_cl", "fcl", "supervised_encoder"]

parts = []
for seed in SEEDS:
    for folder, tag in ((HERE.parent / "seeds" / f"seed{seed}_chosen", "_p10"),
                        (HERE / f"seed{seed}_chosen", "_p30")):
        rows = pd.read_csv(folder / "results.csv")
        rows = rows[(rows.finetune_mode == "local") & (rows.fold == 0) & (rows.n_labeled == 1)
                    & rows.method.isin(METHODS)].copy()
        rows["method"] = rows["method"] + tag
        parts.append(rows)
rows = pd.concat(parts, ignore_index=True)
control = rows[rows.method.str.startswith("supervised_encoder")]
control_seeds = set(control[control.method.str.endswith("_p30")].seed)
rows = rows[~rows.method.str.startswith("supervised_encoder") | rows.seed.isin(control_seeds)]
rows.to_csv(HERE / "rows_p10_and_p30.csv", index=False)
print(rows.groupby("method", sort=False)[["dice_mean", "val_dice", "steps", "best_step"]]
      .mean().round(3))
