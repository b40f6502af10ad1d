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

COLUMNS = ["setting", "multiplier", "epsilon", "ssim", "psnr", "heart_dice", "membership_auc"]


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
                  out: Optional[str]) -> str:
    """Run the audit and write ``privacy_audit.csv`` / ``.md`` / ``.json``; the Markdown."""
    try:
        import dp_accounting  # noqa: F401
    except ImportError:
        raise ConfigError(f"fcl-ray privacy-audit: the accountant is an optional extra that "
                          f"is not installed; {EXTRA_HINT}") from None
    if not 0 <= client < cfg.data.clients:
        raise ConfigError(f"--client {client}: must be in [0, data.clients={cfg.data.clients})")
    if not 0 <= fold < cfg.data.folds:
        raise ConfigError(f"--fold {fold}: must be in [0, data.folds={cfg.data.folds})")
    state = _load_state(encoder)
    from fcl_ray.privacy.audit import run_audit

    try:
        rows = run_audit(cfg, multipliers, state, client, fold, decoder_steps, segmenter_steps,
                         log=progress)
    except RuntimeError as err:   # e.g. an encoder of other widths than model.features
        if "state_dict" not in str(err):
            raise
        raise ConfigError(f"--encoder '{encoder}': does not fit model.features="
                          f"{cfg.model.features}") from None
    import pandas as pd

    from fcl_ray.report import to_markdown

    table = pd.DataFrame(rows)[COLUMNS]
    command = "fcl-ray " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = (f"Privacy audit of client {client} (fold {fold}): {cfg.pretrain.rounds} rounds, "
            f"unit {cfg.privacy.unit}, delta {cfg.privacy.delta:g}, encoder "
            f"{encoder or 'random init'}.\n\n"
            + to_markdown(table.round(3).set_index("setting"), "setting"))
    folder = Path(out) if out else Path(cfg.experiment.output_dir) / "privacy_audit"
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "privacy_audit.csv", index=False)
    (folder / "privacy_audit.md").write_text(f"Made by `{command}`.\n\n{text}")
    (folder / "privacy_audit.json").write_text(json.dumps(
        {"command": command, "client": client, "fold": fold, "encoder": encoder,
         "rows": rows}, indent=1, default=float) + "\n")
    return text + f"\nwritten: {folder / 'privacy_audit.csv'}, .md, .json\n"
