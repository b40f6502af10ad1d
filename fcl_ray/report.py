"""Results tables with pandas: per-client rows -> mean ± std over clients."""
from __future__ import annotations

import pandas as pd

RESULT_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client",
                  "dice_mean", "dice_rv", "dice_myo", "dice_lv"]


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over clients (after averaging folds per client), per method/mode/N."""
    dice_cols = [c for c in results.columns if c.startswith("dice_")]
    per_client = (results.groupby(["method", "finetune_mode", "n_labeled", "client"], sort=False)
                  [dice_cols].mean().reset_index())
    grouped = per_client.groupby(["method", "finetune_mode", "n_labeled"], sort=False)[dice_cols]
    mean, std = grouped.mean(), grouped.std(ddof=0)
    table = mean.copy().astype(object)
    for col in dice_cols:
        table[col] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(mean[col], std[col])]
    order = ["dice_rv", "dice_myo", "dice_lv", "dice_mean"]
    return table[[c for c in order if c in dice_cols] + [c for c in dice_cols if c not in order]]


def format_table(results: pd.DataFrame) -> str:
    """A plain-text table for the terminal."""
    table = summary_table(results).rename(columns=lambda c: c.replace("dice_", ""))
    return table.to_string()
