"""The privacy accountant of the feature exchange: pure Python over Google's ``dp-accounting``.

One round's release at one site (:mod:`fcl_ray.privacy.mechanism`) is: draw ``sampled`` of
the site's ``population`` privacy units (slices, or patients) uniformly *without replacement*,
a fixed number, and add Gaussian noise of standard deviation ``noise_multiplier x
sensitivity`` to every released row. Neighbouring datasets differ by *replacing* one unit
(its pixels; its stack position and the number of units stay, so ``population`` is public),
which is the relation under which ``dp_accounting.SampledWithoutReplacementDpEvent`` is
defined (Wang, Balle, Kasiviswanathan 2019, Theorem 27); the Renyi-DP accountant composes the
rounds and converts to (epsilon, delta). Sampling every unit (``sampled >= population``) is
the plain ``GaussianDpEvent``.

Everything here is a function of a few integers and floats (no torch, no Ray), so the driver,
the sites, ``fcl-ray privacy-audit`` and the config checks all share it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

# The RDP orders searched when converting to (epsilon, delta), one grid for every epsilon of
# a run. Coarser than dp-accounting's default (whose fine fractional orders and orders up to
# 1024 cost ~2 s per epsilon for sampling without replacement, against ~0.2 s here); on the
# releases of the tests the two grids agree to 1e-3.
ORDERS = [1.25, 1.5, 1.75, *range(2, 33), 40, 48, 56, 64, 128, 256]


@dataclass(frozen=True, order=True)
class RoundRelease:
    """What one site releases in one round, for the accountant."""
    population: int           # privacy units the site holds (slices, or patients)
    sampled: int              # units drawn (without replacement) into the round's release
    noise_multiplier: float   # noise std / L2 sensitivity of one unit's rows

    @property
    def sampling_ratio(self) -> float:
        return min(1.0, self.sampled / self.population)

    def as_dict(self) -> dict:
        return {"population": self.population, "sampled": self.sampled,
                "noise_multiplier": self.noise_multiplier}


def sensitivity(unit: str, rows_per_patient: int = 1) -> float:
    """L2 sensitivity of a release of unit-norm rows under replace-one adjacency: one slice
    is one row, which moves by at most 2 (two unit vectors are at most 2 apart); one patient
    is at most ``rows_per_patient`` rows, so at most 2 sqrt(rows_per_patient)."""
    if unit == "slice":
        return 2.0
    if unit == "patient":
        return 2.0 * math.sqrt(rows_per_patient)
    raise ValueError(f"unknown privacy unit {unit!r}; allowed: slice, patient")


def round_event(release: RoundRelease):
    """The dp-accounting event of one round's release."""
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(release.noise_multiplier)
    if release.sampled >= release.population:
        return gaussian
    return dp_accounting.SampledWithoutReplacementDpEvent(
        release.population, release.sampled, gaussian)


def _accountant():
    from dp_accounting import NeighboringRelation
    from dp_accounting.rdp import RdpAccountant

    return RdpAccountant(ORDERS, NeighboringRelation.REPLACE_ONE)


def epsilon(releases: dict[RoundRelease, int], delta: float) -> float:
    """Epsilon at ``delta`` of composing each release ``count`` times (0 rounds: 0; a
    release without noise: infinity)."""
    rounds = tuple(sorted((r, n) for r, n in releases.items() if n > 0))
    return _epsilon(rounds, delta)


@functools.lru_cache(maxsize=1024)   # a round's "after the next" is the next round's "now"
def _epsilon(rounds: tuple[tuple[RoundRelease, int], ...], delta: float) -> float:
    if not rounds:
        return 0.0
    if any(r.noise_multiplier <= 0 for r, _ in rounds):
        return math.inf
    accountant = _accountant()
    for release, count in rounds:
        accountant.compose(round_event(release), count)
    return float(accountant.get_epsilon(delta))


def round_epsilon(release: RoundRelease, delta: float) -> float:
    """Epsilon of a single round's release: the least any budget must allow."""
    return epsilon({release: 1}, delta)


def calibrate_noise_multiplier(target_epsilon: float, delta: float, rounds: int,
                               population: int, sampled: int) -> float:
    """The smallest noise multiplier whose ``rounds`` releases (``sampled`` of
    ``population`` units each) spend at most ``target_epsilon`` at ``delta``."""
    import dp_accounting

    def event(z: float):
        return dp_accounting.SelfComposedDpEvent(
            round_event(RoundRelease(population, sampled, z)), rounds)

    return float(dp_accounting.calibrate_dp_mechanism(
        _accountant, event, target_epsilon, delta,
        dp_accounting.ExplicitBracketInterval(0.05, 200.0), tol=1e-3))


class PrivacyLedger:
    """Each site's releases so far and the epsilon they add up to (one ledger per
    pre-training phase). ``planned[client]`` is the release a round of that site makes."""

    def __init__(self, planned: dict[int, RoundRelease], delta: float):
        self.planned, self.delta = dict(planned), delta
        self.rounds: dict[int, dict[RoundRelease, int]] = {c: {} for c in planned}

    def record(self, client: int, times: int = 1) -> None:
        """``client`` released its planned rows ``times`` more times (a retried round
        releases again)."""
        spent = self.rounds[client]
        release = self.planned[client]
        spent[release] = spent.get(release, 0) + times

    def epsilon(self, client: int) -> float:
        return epsilon(self.rounds[client], self.delta)

    def epsilon_after_next(self, client: int) -> float:
        """The epsilon ``client`` would reach with one more round."""
        spent = dict(self.rounds[client])
        release = self.planned[client]
        spent[release] = spent.get(release, 0) + 1
        return epsilon(spent, self.delta)

    def over_budget(self, max_epsilon: float) -> dict[int, float]:
        """The sites whose next round would take them past ``max_epsilon``, with the epsilon
        they would reach."""
        after = {c: self.epsilon_after_next(c) for c in self.planned}
        return {c: e for c, e in after.items() if e > max_epsilon}
