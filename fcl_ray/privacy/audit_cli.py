"""``fcl-ray privacy-audit``: check the inputs, run :func:`fcl_ray.privacy.audit.run_audit`,
write the table (CSV + Markdown) and return it as text."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.log import progress
from fcl_ray.privacy import EXTRA_HINT
from fcl_ray.privacy.membership import FPRS, coarse_note, fpr_key

# Per row: the attack's figures, then each membership figure with its 95 % CI, p, counts.
MEMBERSHIP = ["membership_auc"] + [fpr_key(f) for f in FPRS]
COLUMNS = (["setting", "multiplier", "epsilon", "ssim", "psnr", "heart_dice"]
           + [k + end for k in MEMBERSHIP for end in ("", "_ci_low", "_ci_high")]
           + ["membership_p", "members", "nonmembers"])
# The phantom's default number of held-out non-members: enough for a TPR at 1 % FPR.
DEFAULT_HELDOUT = 100


def _load_state(path: Optional[str]) -> Optional[dict]:
    if path is None:
        return None
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"--encoder '{path}': not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # a file torch cannot read: one line, exit 2
        raise ConfigError(f"--encoder '{path}': not a torch file of tensors "
                          f"({str(err).splitlines()[0][:120]})") from None


def audit_command(cfg: Config, multipliers: list[float], encoder: Optional[str], client: int,
                  fold: int, decoder_steps: int, segmenter_steps: int,
                  out: Optional[str], heldout: Optional[int] = None) -> str:
    """Run the audit and write ``privacy_audit.csv`` / ``.md`` / ``.json``; the Markdown.
    ``heldout``: non-members drawn on the phantom (None: :data:`DEFAULT_HELDOUT` there, 0 on
    data on disk, whose non-members are its test-fold patients only)."""
    try:
        import dp_accounting  # noqa: F401
    except ImportError:
        raise ConfigError(f"fcl-ray privacy-audit: the accountant is an optional extra that "
                          f"is not installed; {EXTRA_HINT}") from None
    if not 0 <= client < cfg.data.clients:
        raise ConfigError(f"--client {client}: must be in [0, data.clients={cfg.data.clients})")
    if not 0 <= fold < cfg.data.folds:
        raise ConfigError(f"--fold {fold}: must be in [0, data.folds={cfg.data.folds})")
    heldout = _heldout(cfg, heldout)
    state = _load_state(encoder)
    from fcl_ray.privacy.audit import run_audit

    try:
        rows = run_audit(cfg, multipliers, state, client, fold, decoder_steps, segmenter_steps,
                         log=progress, heldout=heldout)
    except RuntimeError as err:   # e.g. an encoder of other widths than model.features
        if "state_dict" not in str(err):
            raise
        raise ConfigError(f"--encoder '{encoder}': does not fit model.features="
                          f"{cfg.model.features}") from None
    import pandas as pd

    from fcl_ray.report import to_markdown

    table = pd.DataFrame(rows)[COLUMNS]
    command = "fcl-ray " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    members, nonmembers = rows[0]["members"], rows[0]["nonmembers"]
    note = coarse_note(members, nonmembers)
    text = (f"Privacy audit of client {client} (fold {fold}): {cfg.pretrain.rounds} rounds, "
            f"unit {cfg.privacy.unit}, delta {cfg.privacy.delta:g}, encoder "
            f"{encoder or 'random init'}. Membership: {members} members (the pool's patients) "
            f"against {nonmembers} non-members ({nonmembers - heldout} test-fold patients, "
            f"{heldout} held-out patients of the same site); 95 % bootstrap CIs over "
            f"patients; chance is AUC 0.5 and TPR = FPR."
            + (f" Note: {note}." if note else "") + "\n\n"
            + to_markdown(readable(table).set_index("setting"), "setting"))
    folder = Path(out) if out else Path(cfg.experiment.output_dir) / "privacy_audit"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "privacy_audit.csv", index=False)
    (folder / "privacy_audit.md").write_text(f"Made by `{command}`.\n\n{text}")
    (folder / "privacy_audit.json").write_text(json.dumps(
        {"command": command, "client": client, "fold": fold, "encoder": encoder,
         "rows": rows}, indent=1, default=float) + "\n")
    return text + f"\nwritten: {folder / 'privacy_audit.csv'}, .md, .json\n"


def _heldout(cfg: Config, heldout: Optional[int]) -> int:
    """The number of held-out non-members to draw (see :func:`audit_command`)."""
    if heldout is None:
        return DEFAULT_HELDOUT if cfg.data.kind == "synthetic" else 0
    if heldout < 0:
        raise ConfigError(f"--heldout {heldout}: must be at least 0")
    if heldout and cfg.data.kind != "synthetic":
        raise ConfigError(f"--heldout {heldout}: held-out patients are drawn on the phantom "
                          f"only (data.kind synthetic); on data.kind {cfg.data.kind} the "
                          f"non-members are the test-fold patients: use --heldout 0")
    return heldout


def readable(table):
    """``table`` with each membership figure as one ``value [low, high]`` column (3 decimals;
    its CI columns dropped), p to 2 digits, the counts as ``members / non-members``, every
    other number rounded to 3 decimals: what the Markdown tables show."""
    import math

    def counts(m, n) -> str:
        return "-" if math.isnan(m) else f"{int(m)} / {int(n)}"

    shown = table.drop(columns=[k + end for k in MEMBERSHIP for end in ("_ci_low", "_ci_high")]
                       + ["membership_p", "members", "nonmembers"]).round(3)
    for key in MEMBERSHIP:
        shown[key] = [("n/a" if math.isnan(v) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
                      for v, lo, hi in zip(table[key], table[f"{key}_ci_low"],
                                           table[f"{key}_ci_high"])]
    shown["membership_p"] = [f"{p:.2g}" for p in table["membership_p"]]
    shown["members / non-members"] = [counts(float(m), float(n)) for m, n in
                                      zip(table["members"], table["nonmembers"])]
    return shown
