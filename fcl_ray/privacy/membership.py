"""The privacy audit's membership test, as a measurement. Pure (torch, NumPy, SciPy); no Ray.

A patient's score is how close the site's releases come to its own slices
(:func:`membership_scores`). Members are patients whose slices the site could release (its
pre-training pool), non-members patients of the same site that it never could. The test's
figures (:func:`membership_figures`):

- **AUC**: the chance that a random member scores above a random non-member (ties count
  half). 0.5 is a guess, 1 a perfect test. With a 95 % bootstrap CI over patients: members
  and non-members are resampled separately (:func:`fcl_ray.statistics.two_sample_ci`).
- **TPR at a low FPR** (Carlini et al. 2022, "Membership inference attacks from first
  principles"): the share of members the attacker flags when it may wrongly flag at most
  that share of non-members. A guess gets TPR = FPR. An FPR of ``f`` needs at least
  ``1 / f`` non-members to be measured at all (:func:`min_nonmembers`); below that: NaN.
- **p**: the one-sided permutation p of the AUC (SciPy; exact over every relabelling up to
  10,000 of them): how often a test that sees nothing would do as well. A perfect
  separation makes every bootstrap resample perfect too (CI [1, 1]); p and the counts then
  say how much that rests on (9 members against 3 non-members: p >= 1/220).
"""
from __future__ import annotations

import math

import numpy as np
import torch

FPRS = (0.1, 0.01)        # the false-positive rates the TPR is read at
COARSE_BELOW = 20         # fewer members or non-members than this: a coarse figure


def membership_scores(rows: torch.Tensor, patients: torch.Tensor,
                      released: torch.Tensor) -> dict[int, float]:
    """Each patient's score: the highest cosine between one of its slices' (clean) rows and
    any released row. Rows are unit length, so the dot product is the cosine."""
    best = (rows @ released.T).max(1).values
    return {int(p): float(best[patients == p].max()) for p in patients.unique()}


def auc(members, nonmembers) -> float:
    """P(member score > non-member score) + P(equal) / 2, over all pairs (the Mann-Whitney
    form of the ROC AUC, exact with ties)."""
    a, b = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    return float(np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :]))


def tpr_at_fpr(members, nonmembers, fpr: float) -> float:
    """The ROC curve's true-positive rate at false-positive rate ``fpr``: flag the patients
    scoring above a threshold; where ``fpr`` falls inside a group of tied scores, flag that
    group at random (the ROC's straight segment), so a constant score gives TPR = FPR."""
    a, b = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    thresholds = np.unique(np.concatenate([a, b]))[::-1]         # highest first
    tprs = np.concatenate([[0.0], (a[None, :] >= thresholds[:, None]).mean(1)])
    fprs = np.concatenate([[0.0], (b[None, :] >= thresholds[:, None]).mean(1)])
    below = np.nonzero(fprs <= fpr)[0][-1]         # the last ROC point within the FPR
    if below == len(fprs) - 1 or fprs[below] == fpr:
        return float(tprs[below])
    step = (fpr - fprs[below]) / (fprs[below + 1] - fprs[below])
    return float(tprs[below] + step * (tprs[below + 1] - tprs[below]))


def min_nonmembers(fpr: float) -> int:
    """Non-members needed to measure a TPR at ``fpr``: one false positive must be allowed."""
    return math.ceil(1 / fpr - 1e-9)


def fpr_key(fpr: float) -> str:
    """The row key of the TPR at ``fpr``: ``membership_tpr_at_fpr10`` for 10 %."""
    return f"membership_tpr_at_fpr{fpr * 100:g}"


def membership_figures(members, nonmembers, resamples: int | None = None,
                       seed: int | None = None) -> dict[str, float | int]:
    """AUC and TPR at each of :data:`FPRS`, each with its 95 % bootstrap CI over patients
    (``*_ci_low``, ``*_ci_high``), and the counts they rest on (``members``,
    ``nonmembers``). A TPR its non-members cannot measure is NaN."""
    from fcl_ray.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, two_sample_ci

    resamples = BOOTSTRAP_RESAMPLES if resamples is None else resamples
    seed = BOOTSTRAP_SEED if seed is None else seed
    members, nonmembers = list(members), list(nonmembers)
    figures: dict[str, float | int] = {"members": len(members), "nonmembers": len(nonmembers)}
    tests = [("membership_auc", auc, 1)] + [
        (fpr_key(f), lambda a, b, f=f: tpr_at_fpr(a, b, f), min_nonmembers(f)) for f in FPRS]
    for key, statistic, needed in tests:
        if not members or len(nonmembers) < needed:
            figures |= {key: math.nan, f"{key}_ci_low": math.nan, f"{key}_ci_high": math.nan}
            continue
        low, high = two_sample_ci(members, nonmembers, statistic, resamples, seed)
        figures |= {key: statistic(members, nonmembers), f"{key}_ci_low": low,
                    f"{key}_ci_high": high}
    figures["membership_p"] = (auc_p(members, nonmembers, resamples, seed)
                               if members and nonmembers else math.nan)
    return figures


def auc_p(members, nonmembers, resamples: int, seed: int) -> float:
    """One-sided p of the AUC under "membership does not change the score": the share of
    relabellings of the same patients (members and non-members shuffled, sizes kept) whose
    AUC is at least the observed one. Exact when there are at most ``resamples``."""
    from scipy.stats import permutation_test

    result = permutation_test((np.asarray(members, float), np.asarray(nonmembers, float)),
                              auc, permutation_type="independent", alternative="greater",
                              n_resamples=resamples, vectorized=False,
                              rng=np.random.default_rng(seed))
    return float(result.pvalue)


def coarse_note(n_members: int, n_nonmembers: int) -> str:
    """A warning when the test rests on few patients, else ''."""
    if min(n_members, n_nonmembers) >= COARSE_BELOW:
        return ""
    return (f"membership rests on {n_members} members and {n_nonmembers} non-members: a "
            f"coarse figure (read its CI; below {COARSE_BELOW} of either it is wide)")


def describe(figures: dict) -> str:
    """One line: ``AUC 0.82 [0.61, 0.97], TPR@10%FPR 0.33 [..], 9 members / 103 non-members``."""
    def one(key: str) -> str:
        value = figures[key]
        if math.isnan(value):
            return "n/a"
        return f"{value:.2f} [{figures[f'{key}_ci_low']:.2f}, {figures[f'{key}_ci_high']:.2f}]"

    tprs = ", ".join(f"TPR@{f * 100:g}%FPR {one(fpr_key(f))}" for f in FPRS)
    return (f"membership AUC {one('membership_auc')}, {tprs}, p {figures['membership_p']:.2g} "
            f"({figures['members']} members / {figures['nonmembers']} non-members)")
