"""When to stop fine-tuning: the best validation score so far and the patience left.

Plain Python (no torch, no Ray) so that both a client (local fine-tuning) and the
coordinator (federated fine-tuning, which imports no torch) use the same rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Track validation scores (higher is better) evaluated every so many steps.

    ``update`` records one evaluation; ``should_stop`` is true once ``patience`` evaluations
    in a row have not improved on the best (strictly greater; a NaN score never improves).
    ``best_step`` is the step whose weights the caller keeps and restores at the end.
    """

    patience: int
    best: float = -math.inf
    best_step: int = 0
    evaluations: int = 0
    since_best: int = 0

    def update(self, score: float, step: int) -> bool:
        """Record ``score`` at ``step``; True when it is a new best (keep these weights)."""
        self.evaluations += 1
        if not math.isnan(score) and score > self.best:
            self.best, self.best_step, self.since_best = score, step, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.since_best >= self.patience

    def summary(self, steps_run: int) -> dict:
        """What a results row records: steps run, the restored step, its validation Dice."""
        return {"steps": steps_run, "best_step": self.best_step,
                "val_dice": self.best if self.evaluations and self.best > -math.inf
                else float("nan")}


def evaluation_steps(max_steps: int, every: int) -> list[int]:
    """The steps after which validation runs: every ``every`` steps and at ``max_steps``."""
    steps = list(range(every, max_steps + 1, every))
    return steps if steps and steps[-1] == max_steps else steps + [max_steps]
