"""Schedules over the pre-training steps (pure functions, no state)."""
from __future__ import annotations

import math


def momentum_at(step: int, total_steps: int, start: float, end: float,
                schedule: str = "constant") -> float:
    """The momentum encoder's EMA factor at step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``start`` at every step. ``cosine`` (BYOL's schedule, with ``end`` in place
    of its 1): ``end - (end - start) * (cos(pi k / K) + 1) / 2``, so ``start`` at step 0,
    rising along a half cosine to ``end`` at step K; steps past K stay at ``end``.
    """
    if schedule == "constant":
        return start
    if schedule != "cosine":
        raise ValueError(f"unknown momentum schedule {schedule!r}; allowed: constant, cosine")
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2
