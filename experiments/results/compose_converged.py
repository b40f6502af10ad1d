"""Compose experiments/results/results.csv after the reruns at the converged sweep's rates.

Rule (fixed before any rerun was read): rows of a method whose pre-training rate changed
(Local CL, FedRotation, FedSwAV, FCL) and every fold-1 row come from the reruns in
``converged_rates/{f0,f1,n}/results.csv``; the rows they replaced are in
``old_rates/results.csv`` (written the first time, kept after). Rows of random init, the upper
bound and the methods whose rate did not change (FedSimCLR, FedCA) on fold 0 are kept as they
ran. Running it again gives the same file.

    .venv/bin/python experiments/results/compose_converged.py
"""
from pathlib import Path

import pandas as pd

from fcl_ray.results import KEY_COLUMNS, SEED_COLUMN, read_results_csv

HERE = Path(__file__).parent
RETUNED = {"local_cl", "fedrotation", "fedswav", "fcl"}
RERUNS = ["f0", "f1", "n"]


def main() -> None:
    committed = read_results_csv(HERE / "results.csv")
    replaced = committed["method"].isin(RETUNED) | (committed["fold"] == 1)
    old_path = HERE / "old_rates" / "results.csv"
    if not old_path.exists():   # the first composition; later ones replace rerun rows only
        old_path.parent.mkdir(exist_ok=True)
        committed[replaced].to_csv(old_path, index=False)
    reruns = [read_results_csv(HERE / "converged_rates" / run) for run in RERUNS]
    rows = pd.concat([committed[~replaced], *reruns], ignore_index=True)
    duplicated = rows.duplicated(KEY_COLUMNS + [SEED_COLUMN], keep=False)
    if duplicated.any():
        raise SystemExit(f"duplicate rows after composing:\n{rows[duplicated][KEY_COLUMNS]}")
    rows = rows.sort_values(["fold", "method", "finetune_mode", "n_labeled", "client"],
                            kind="stable")
    rows.to_csv(HERE / "results.csv", index=False)
    print(f"kept {int((~replaced).sum())}, added {sum(len(r) for r in reruns)}: {len(rows)} rows")


if __name__ == "__main__":
    main()
