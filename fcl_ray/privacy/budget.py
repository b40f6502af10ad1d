"""The driver's side of ``privacy.*``: each site's epsilon per round, and the budget. No Ray.

One :class:`PhaseBudget` per pre-training phase (method, fold). The sites say at set-up what
one round releases (:class:`~fcl_ray.privacy.accountant.RoundRelease`); every round a site
was *called* for counts as a release, answered or not, and every retried attempt counts again
(a late or retried site may still have sent its rows): the ledger errs on the side of more
epsilon. Epsilon goes to ``rounds.jsonl``, MLflow (``<method>/privacy/epsilon_client<i>``)
and ``<output_dir>/privacy.json`` (the run's privacy summary).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.log import get_logger
from fcl_ray.privacy.accountant import PrivacyLedger, RoundRelease, round_epsilon

SUMMARY_FILE = "privacy.json"


class PhaseBudget:
    """Epsilon per site over one pre-training phase, and ``privacy.max_epsilon``."""

    def __init__(self, cfg: Config, releases: dict, rounds_done: int, label: str):
        pr = cfg.privacy
        self.cfg, self.label = cfg, label
        planned = {int(c): RoundRelease(**r) for c, r in releases.items()}
        self.ledger = PrivacyLedger(planned, pr.delta)
        for client in planned:   # resumed: the rounds before the checkpoint, all of them
            if rounds_done:
                self.ledger.record(client, rounds_done)
        self.rounds_done = rounds_done
        self.stopped: Optional[str] = None
        self.warned = False

    @classmethod
    def for_phase(cls, cfg: Config, info: dict, label: str) -> Optional["PhaseBudget"]:
        """The phase's budget, or None when privacy is off or the method shares nothing.
        A budget below one round's spend of some site is a ConfigError (one line)."""
        releases = info.get("privacy") or {}
        if not cfg.privacy.enabled or not releases:
            return None
        budget = cls(cfg, releases, info.get("start_round", 0), label)
        budget.check_one_round()
        return budget

    def check_one_round(self) -> None:
        pr = self.cfg.privacy
        if pr.max_epsilon is None:
            return
        for client, release in sorted(self.ledger.planned.items()):
            spend = round_epsilon(release, pr.delta)
            if spend > pr.max_epsilon:
                raise ConfigError(
                    f"config key 'privacy.max_epsilon': {pr.max_epsilon} is smaller than one "
                    f"round's spend of client {client} (epsilon {spend:.3g} at privacy.delta="
                    f"{pr.delta}, noise multiplier {release.noise_multiplier:.3g}, "
                    f"{release.sampled} of {release.population} {pr.unit}s)")

    def may_run_round(self, round_number: int, log: Callable[[str], None]) -> bool:
        """Before round ``round_number`` (1-based): False when it would take a site past
        ``privacy.max_epsilon`` and ``on_budget`` is stop (said in one line); with warn, one
        warning and True."""
        pr = self.cfg.privacy
        if pr.max_epsilon is None:
            return True
        over = self.ledger.over_budget(pr.max_epsilon)
        if not over:
            return True
        worst = max(over, key=over.get)
        line = (f"[{self.label}] privacy budget: round {round_number} would take client "
                f"{worst} to epsilon {over[worst]:.3g} > privacy.max_epsilon={pr.max_epsilon}")
        if pr.on_budget == "stop":
            self.stopped = (f"stopped before round {round_number} of {self.cfg.pretrain.rounds}; "
                            f"the encoder of round {round_number - 1} is used")
            log(f"{line}; {self.stopped}")
            return False
        if not self.warned:
            get_logger(__name__).warning(f"{line}; going on (privacy.on_budget=warn)")
            self.warned = True
        return True

    def after_round(self, round_number: int, sampled: list[int],
                    retries: int = 0) -> dict[int, float]:
        """Count round ``round_number``'s releases (every sampled site, once per attempt:
        ``1 + retries``); the epsilon of every site so far."""
        for client in sampled:
            if client in self.ledger.planned:
                self.ledger.record(client, 1 + retries)
        self.rounds_done = round_number
        return self.epsilons()

    def epsilons(self) -> dict[int, float]:
        return {c: self.ledger.epsilon(c) for c in sorted(self.ledger.planned)}

    def record(self, epsilons: dict[int, float]) -> dict:
        """The ``privacy`` entry of a rounds.jsonl record."""
        return {"epsilon": {str(c): e for c, e in epsilons.items()},
                "delta": self.cfg.privacy.delta, "unit": self.cfg.privacy.unit}

    def summary(self) -> dict:
        """The phase's entry of privacy.json."""
        pr = self.cfg.privacy
        return {"delta": pr.delta, "unit": pr.unit, "rows_per_patient": pr.rows_per_patient,
                "rounds": self.rounds_done, "max_epsilon": pr.max_epsilon,
                "stopped": self.stopped,
                "clients": {str(c): {"epsilon": self.ledger.epsilon(c),
                                     "releases": sum(self.ledger.rounds[c].values()),
                                     **self.ledger.planned[c].as_dict()}
                            for c in sorted(self.ledger.planned)}}

    def line(self) -> str:
        """One line for the log: epsilon per site at the end of the phase."""
        return f"[{self.label}] privacy: " + _phase_line(self.summary())

    def write_summary(self, out_dir: str | Path, key: str) -> Path:
        """Merge this phase's summary into ``<out_dir>/privacy.json`` under ``key``."""
        path = Path(out_dir) / SUMMARY_FILE
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[key] = self.summary()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, path)
        return path


def summary_lines(out_dir: str | Path) -> list[str]:
    """One line per pre-training phase of ``<out_dir>/privacy.json`` (none without it): the
    privacy figures ``fcl-ray run`` prints under its Dice table."""
    path = Path(out_dir) / SUMMARY_FILE
    if not path.is_file():
        return []
    return [f"{phase}: {_phase_line(s)}" for phase, s in json.loads(path.read_text()).items()]


def _phase_line(s: dict) -> str:
    """A phase's summary (:meth:`PhaseBudget.summary`) in words."""
    eps = ", ".join(f"{c['epsilon']:.3g}" for c in s["clients"].values())
    return (f"epsilon per site {eps} at delta {s['delta']:g} (unit {s['unit']}, "
            f"{s['rounds']} rounds" + (f"; {s['stopped']})" if s["stopped"] else ")"))
