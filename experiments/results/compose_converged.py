"""Compose experiments/results/results.csv after the reruns at the converged sweep's rates.

Rule (fixed before any rerun was read): rows of a method whose pre-training rate changed
(Local CL, FedRotation, FedSwAV, FCL) and every fold-1 row are replaced by the reruns in
``converged_rates/{f0,f1,n}/results.csv``; the rows they replace move to
``old_rates/results.csv``. Rows of random init, the upper bound and the methods whose rate did
not change (FedSimCLR, FedCA) on fold 0 are kept as they ran.

    .venv/bin/python experiments/results/compose_converged.py
"""
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
RETUNED = {"local_cl", "fedrotation", "fedswav", "fcl"}
RERUNS = ["f0", "f1", "n"]


def main() -> None:
    committed = pd.read_csv(HERE / "results.csv")
    replaced = committed["method"].isin(RETUNED) | (committed["fold"] == 1)
    old_dir = HERE / "old_rates"
    old_dir.mkdir(exist_ok=True)
    old_path = old_dir / "results.csv"
    if old_path.exists():   # run twice: keep the first split, do not move rows again
        raise SystemExit(f"{old_path} exists: composed already")
    committed[replaced].to_csv(old_path, index=False)
    reruns = [pd.read_csv(HERE / "converged_rates" / run / "results.csv") for run in RERUNS]
    rows = pd.concat([committed[~replaced], *reruns], ignore_index=True)
    key = ["method", "finetune_mode", "n_labeled", "fold", "client", "seed"]
    duplicated = rows.duplicated(key, keep=False)
    if duplicated.any():
        raise SystemExit(f"duplicate rows after composing:\n{rows[duplicated][key]}")
    rows = rows.sort_values(["fold", "method", "finetune_mode", "n_labeled", "client"],
                            kind="stable")
    rows.to_csv(HERE / "results.csv", index=False)
    print(f"kept {int((~replaced).sum())}, moved {int(replaced.sum())} to {old_path}, "
          f"added {sum(len(r) for r in reruns)}: {len(rows)} rows")


if __name__ == "__main__":
    main()
