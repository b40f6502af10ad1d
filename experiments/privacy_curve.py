"""The privacy-utility curve (issue 32, point 4): FCL's N=1 local Dice against each site's
epsilon, with the privacy audit's figures beside it.

For one experiment config it runs, each into <out>/<setting>/ with ``fcl-ray run``:
no exchange (``fcl_no_exchange``), FCL without noise (no guarantee), and FCL with
``privacy.feature_noise_multiplier`` at every ``--multipliers`` value; then
``fcl-ray privacy-audit`` on each setting's own pre-trained encoder at its own multiplier
(no noise: 0; ``--heldout`` passed on: the membership test's extra non-members). It writes
<out>/privacy_curve.csv, .md and .png.

    python experiments/privacy_curve.py experiments/benchmark_v2.yaml \\
        --multipliers 0.5,1,2 --out runs/privacy_curve

Every ``--set`` is passed to both commands (e.g. the tiny size of docs/privacy.md). A setting
whose results.csv is already there is not run again (delete its folder to rerun it).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fcl_ray.privacy.audit_cli import COLUMNS, readable

FCL, NO_EXCHANGE = "fcl", "fcl_no_exchange"
# The audit's membership figures the curve keeps: AUC, TPRs, their CIs, p and the counts.
MEMBERSHIP_COLUMNS = COLUMNS[COLUMNS.index("membership_auc"):]


def _fcl_ray(*args: str) -> None:
    command = [sys.executable, "-m", "fcl_ray", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def _settings(multipliers: list[float]) -> list[tuple[str, str, float | None]]:
    """(folder, method, multiplier): no exchange, no noise, then each multiplier."""
    return ([("no_exchange", NO_EXCHANGE, None), ("no_noise", FCL, None)]
            + [(f"z{z:g}", FCL, z) for z in multipliers])


def _local_dice(results: Path, method: str) -> float:
    """Mean over clients (and folds) of the local Dice at the smallest N."""
    table = pd.read_csv(results)
    rows = table[(table["method"] == method) & (table["finetune_mode"] == "local")]
    return float(rows[rows["n_labeled"] == rows["n_labeled"].min()]["dice_mean"].mean())


def _release_network_file(folder: Path) -> Path:
    """Client 0's last checkpoint (its momentum network, projection head included, computed
    the shared rows), or without checkpoints the encoder file (the audit then draws a head)."""
    phase = folder / "checkpoints" / f"{FCL}-fold0"
    latest = phase / "LATEST"
    if latest.is_file():
        done = json.loads(latest.read_text())["round"]
        checkpoint = phase / f"round-{done:04d}" / "client-0.pt"
        if checkpoint.is_file():
            return checkpoint
    return folder / "encoders" / f"{FCL}-fold0.pt"


def _epsilons(folder: Path) -> list[float]:
    """Each site's final epsilon (fold 0's pre-training), or [] without privacy."""
    path = folder / "privacy.json"
    if not path.is_file():
        return []
    phase = json.loads(path.read_text())[f"{FCL}/fold0"]
    return [c["epsilon"] for c in phase["clients"].values()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--multipliers", default="0.5,1,2")
    parser.add_argument("--out", default="runs/privacy_curve")
    parser.add_argument("--decoder-steps", default="300")
    parser.add_argument("--segmenter-steps", default="200")
    parser.add_argument("--heldout", help="the audit's --heldout (default: the audit's)")
    parser.add_argument("--no-audit", action="store_true", help="Dice and epsilon only")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    out = Path(args.out)
    sets = [flag for o in args.overrides for flag in ("--set", o)]
    rows = []
    for name, method, z in _settings([float(v) for v in args.multipliers.split(",")]):
        folder = out / name
        privacy = [] if z is None else ["--set", f"privacy.feature_noise_multiplier={z}"]
        common = [*sets, "--set", f"experiment.output_dir={folder}", *privacy]
        if not (folder / "results.csv").is_file():
            _fcl_ray("run", args.config, *common, "--set", f"pretrain.methods=[{method}]",
                     "--set", "finetune.modes=[local]", "--overwrite")
        eps = _epsilons(folder)
        row = {"setting": name, "method": method, "multiplier": z,
               "epsilon_max": max(eps) if eps else (0.0 if method == NO_EXCHANGE
                                                    else float("inf")),
               "epsilon_per_site": " ".join(f"{e:.3g}" for e in eps),
               "dice_local_n1": _local_dice(folder / "results.csv", method)}
        if method == FCL and not args.no_audit:
            _fcl_ray("privacy-audit", args.config, *common, "--encoder",
                     str(_release_network_file(folder)), "--multipliers",
                     f"{z or 0:g}", "--out", str(folder / "audit"),
                     "--decoder-steps", args.decoder_steps,
                     "--segmenter-steps", args.segmenter_steps,
                     *(["--heldout", args.heldout] if args.heldout is not None else []))
            audit = pd.read_csv(folder / "audit" / "privacy_audit.csv")
            attack = audit[audit["setting"] != "share nothing"].iloc[0]
            baseline = audit[audit["setting"] == "share nothing"].iloc[0]
            row |= {k: attack[k] for k in ["ssim", "psnr", "heart_dice", *MEMBERSHIP_COLUMNS]}
            row |= {f"baseline_{k}": baseline[k] for k in ("ssim", "psnr", "heart_dice")}
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "privacy_curve.csv", index=False)
    from fcl_ray.report import to_markdown

    command = "python " + " ".join([sys.argv[0], *sys.argv[1:]])
    shown = readable(table) if "membership_auc" in table else table.round(3)
    (out / "privacy_curve.md").write_text(
        f"Made by `{command}`.\n\n" + to_markdown(shown.set_index("setting"), "setting"))
    _plot(table, out / "privacy_curve.png")
    print(shown.to_string(index=False))
    return 0


def _plot(table: pd.DataFrame, path: Path) -> None:
    """Dice against epsilon (finite epsilons on the axis; no noise and no exchange as lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    noisy = table[table["multiplier"].notna()]
    ax.plot(noisy["epsilon_max"], noisy["dice_local_n1"], "o-", label="FCL, DP exchange")
    for _, row in noisy.iterrows():
        ax.annotate(f"z={row['multiplier']:g}", (row["epsilon_max"], row["dice_local_n1"]))
    for setting, style in (("no_noise", "--"), ("no_exchange", ":")):
        ref = table[table["setting"] == setting]["dice_local_n1"]
        if len(ref):
            ax.axhline(float(ref.iloc[0]), linestyle=style, color="grey", label=setting)
    ax.set_xlabel("epsilon per site (max over sites)")
    ax.set_ylabel("local Dice, N=1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
