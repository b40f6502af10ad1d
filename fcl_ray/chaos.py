"""The fault schedule of a chaos drill: which fault happens in which pre-training round.

Pure and seeded (NumPy only, no Ray, no processes): the same ``(rounds, seed, ...)`` always
gives the same schedule, so a drill can be repeated and its unit test needs nothing running.
:mod:`fcl_ray.chaos_drill` carries the schedule out on real processes.

Three kinds of fault, each "during round r" (the monkey acts once round r-1 is recorded):

- ``kill_client``: SIGKILL of one client actor process (a host that dies); Ray restarts it
  and it rejoins. About one every ``kill_every`` rounds: one in each block of that many
  rounds, at a seeded place inside the block.
- ``straggle``: SIGSTOP of one client process for longer than ``federation.round_timeout_s``,
  then SIGCONT (a frozen host): the coordinator must drop it as late.
- ``kill_driver``: SIGKILL of the driver process once, then ``fcl-ray run ... --resume``.

No fault falls in the first round (nothing is checkpointed before it) or the last one (a
fault there tests the fine-tuning phase, not the rounds), and no two share a round, so every
drop in ``rounds.jsonl`` can be traced back to one event.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

KILL_CLIENT, STRAGGLE, KILL_DRIVER = "kill_client", "straggle", "kill_driver"
KINDS = (KILL_CLIENT, STRAGGLE, KILL_DRIVER)


@dataclass(frozen=True)
class ChaosEvent:
    """One scheduled fault. ``pick`` chooses the victim among the client processes alive
    when it fires (``pick % len(alive)`` of them, sorted by pid): which client that is
    depends on pids, so the drill reads the victim's client id back from rounds.jsonl."""
    round: int   # 1-based pre-training round during which the fault happens
    kind: str    # one of KINDS
    pick: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def chaos_schedule(rounds: int, seed: int, kill_every: int = 3, stragglers: int | None = None,
                   kill_driver: bool = True) -> list[ChaosEvent]:
    """The events of a drill over ``rounds`` pre-training rounds, sorted by round.

    ``kill_every``: one client kill per block of that many rounds (``rounds // kill_every``
    kills in all, fewer if rounds run out); ``stragglers``: how many straggler events
    (default: one per 10 rounds, at least one); ``kill_driver``: one driver kill.
    Raises ValueError when the rounds cannot hold the events (they need distinct rounds
    between the first and the last)."""
    if rounds < 3:
        raise ValueError(f"rounds must be at least 3 (faults avoid the first and last round), "
                         f"got {rounds}")
    if kill_every < 1:
        raise ValueError(f"kill_every must be at least 1, got {kill_every}")
    stragglers = max(1, rounds // 10) if stragglers is None else stragglers
    if stragglers < 0:
        raise ValueError(f"stragglers must be 0 or more, got {stragglers}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC4A05]))
    free = list(range(2, rounds))                  # rounds that may hold a fault
    wanted = rounds // kill_every + stragglers + int(kill_driver)
    if wanted > len(free):
        raise ValueError(f"{wanted} faults do not fit in rounds 2..{rounds - 1} "
                         f"({len(free)} rounds); use more rounds or fewer faults")

    def take(candidates: list[int]) -> int:
        chosen = int(rng.choice(candidates))
        free.remove(chosen)
        return chosen

    events = []
    if kill_driver:   # away from the ends when possible, so rounds run on both sides
        middle = [r for r in free if 3 <= r <= rounds - 2] or free
        events.append(ChaosEvent(take(middle), KILL_DRIVER, -1))
    for block in range(rounds // kill_every):
        inside = [r for r in free if block * kill_every < r <= (block + 1) * kill_every]
        if inside or free:
            events.append(ChaosEvent(take(inside or free), KILL_CLIENT,
                                     int(rng.integers(0, 2 ** 31))))
    for _ in range(stragglers):
        if free:
            events.append(ChaosEvent(take(free), STRAGGLE, int(rng.integers(0, 2 ** 31))))
    return sorted(events, key=lambda e: e.round)
