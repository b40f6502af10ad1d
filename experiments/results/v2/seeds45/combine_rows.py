"""Seeds 0-4 (and 5 once run), fold 0, local N=1, patience 30 / 2000: FCL, Local CL, random init.

Seeds 0-3 are the committed rows of ../patience/seedS_chosen; seeds 4-5 are seedS_chosen here
where they were run (seed 5 was not), run the same way (one pre-training run a seed, rates 0.1
and 1 chosen on validation). Writes
rows_pooled.csv with the methods random, local_cl and fcl, plus fcl_runs_averaged (the rule's
secondary figure: at seeds 0-3 a site's two FCL pre-training runs averaged, from
../rerun/rows_two_runs.csv; at seeds 4-5 the one run) and the positive control where it ran
(supervised_encoder: seed 1 in ../patience, seed 4 in seed4_control_chosen), for
`fcl-ray report --reference ... --sites seed_client`, and prints the per-seed means and the
health of each pre-training at its last round.

    .venv/bin/python experiments/results/v2/seeds45/combine_rows.py
"""
import re
from pathlib import Path

import pandas as pd

from fcl_ray.results import read_results_csv

HERE = Path(__file__).resolve().parent
V2 = HERE.parent
METHODS = ["random", "local_cl", "fcl"]


def _rows(folder: Path, methods: list[str]) -> pd.DataFrame:
    rows = read_results_csv(folder)      # the project's reader: checks columns and Dice ranges
    keep = ((rows.finetune_mode == "local") & (rows.fold == 0) & (rows.n_labeled == 1)
            & rows.method.isin(methods))
    return rows[keep].copy()


folders = {s: V2 / "patience" / f"seed{s}_chosen" for s in (0, 1, 2, 3)}
folders |= {s: HERE / f"seed{s}_chosen" for s in (4, 5)
            if (HERE / f"seed{s}_chosen" / "results.csv").exists()}
rows = pd.concat([_rows(folder, METHODS) for folder in folders.values()], ignore_index=True)
# The positive control at patience 30: seed 1 ran it in ../patience, seed 4 in seed4_control_*.
controls = [folders[1], HERE / "seed4_control_chosen"]
control = pd.concat([_rows(folder, ["supervised_encoder"]) for folder in controls
                     if (folder / "results.csv").exists()], ignore_index=True)

two_runs = pd.read_csv(V2 / "rerun" / "rows_two_runs.csv")
averaged = pd.concat([two_runs[two_runs.method == "fcl_two_runs"],
                      rows[(rows.method == "fcl") & (rows.seed >= 4)]], ignore_index=True)
averaged["method"] = "fcl_runs_averaged"
pooled = pd.concat([rows, averaged, control], ignore_index=True)
pooled.to_csv(HERE / "rows_pooled.csv", index=False)

print(f"seeds {sorted(folders)}; local N=1, fold 0, mean test Dice over a seed's sites:")
print(pd.concat([rows, control]).pivot_table(index="seed", columns="method", values="dice_mean")
      .reindex(columns=METHODS + ["supervised_encoder"]).round(3).to_string())

print("\nhealth at the last pre-training round (mean over clients), seeds 4-5:")
for seed in (4, 5):
    log = HERE / f"seed{seed}_s01" / "run.log"
    if not log.exists():
        continue
    last = {}
    method = None
    for line in log.read_text().splitlines():
        started = re.search(r"\[(\w+)\] pre-training", line)
        method = started.group(1) if started else method
        if "health (mean over clients)" in line:
            last[method] = line.split("health (mean over clients): ")[1]
    for name, figures in last.items():
        print(f"  seed {seed} {name}: {figures}")
