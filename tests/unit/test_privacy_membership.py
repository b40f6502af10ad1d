"""The membership test's figures on small score lists: AUC and its bootstrap CI, TPR at a low
FPR, the permutation p, the counts; and the phantom's held-out non-members. No Ray."""
import math

import numpy as np
import pytest
import torch

from conftest import TINY
from fcl_ray.config_io import load_config
from fcl_ray.privacy import membership as M


def test_scores_are_one_for_exactly_released_rows_and_equal_when_nothing_is():
    rows = torch.nn.functional.normalize(torch.randn(6, 8, generator=torch.Generator()
                                                     .manual_seed(0)), dim=1)
    patients = torch.tensor([0, 0, 1, 1, 2, 2])
    inside = M.membership_scores(rows[:4], patients[:4], rows[:4])       # released exactly
    outside = M.membership_scores(rows[4:], patients[4:], rows[:4])
    assert list(inside.values()) == pytest.approx([1.0, 1.0])
    assert M.auc(list(inside.values()), list(outside.values())) == 1.0
    nothing = M.membership_scores(rows, patients, torch.zeros(1, 8))
    assert set(nothing.values()) == {0.0}


def test_auc_counts_ties_half_and_tpr_reads_the_roc_at_the_fpr():
    assert M.auc([1, 2], [0, 1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    members, nonmembers = np.arange(10) + 0.5, np.arange(10)   # 0.5 .. 9.5 against 0 .. 9
    # a threshold between 8 and 8.5 flags 1 non-member (FPR 10 %) and 2 members
    assert M.tpr_at_fpr(members, nonmembers, 0.1) == pytest.approx(0.2)
    assert M.tpr_at_fpr([5.0] * 4, [5.0] * 20, 0.1) == pytest.approx(0.1)   # a guess: FPR
    assert M.min_nonmembers(0.1) == 10 and M.min_nonmembers(0.01) == 100


def test_separable_members_give_auc_near_one_with_a_ci_above_chance():
    rng = np.random.default_rng(0)
    figures = M.membership_figures(rng.normal(3, 1, 30), rng.normal(0, 1, 100),
                                   resamples=2000)
    assert figures["membership_auc"] > 0.95
    assert 0.5 < figures["membership_auc_ci_low"] <= figures["membership_auc"]
    assert figures["membership_tpr_at_fpr10_ci_low"] > 0.1          # above a guess
    assert figures["membership_p"] < 0.01
    assert (figures["members"], figures["nonmembers"]) == (30, 100)


def test_identical_distributions_give_a_ci_that_contains_chance():
    rng = np.random.default_rng(1)
    figures = M.membership_figures(rng.normal(0, 1, 30), rng.normal(0, 1, 100),
                                   resamples=2000)
    assert figures["membership_auc_ci_low"] < 0.5 < figures["membership_auc_ci_high"]
    assert figures["membership_tpr_at_fpr10_ci_low"] < 0.1 < figures[
        "membership_tpr_at_fpr10_ci_high"]
    assert figures["membership_p"] > 0.05


def test_too_few_nonmembers_leave_the_low_fpr_unmeasured_and_are_called_coarse():
    figures = M.membership_figures([0.9] * 9, [0.1, 0.2, 0.3], resamples=500)
    assert figures["membership_auc"] == 1.0
    assert math.isnan(figures["membership_tpr_at_fpr10"])
    assert figures["membership_p"] == pytest.approx(1 / 220)   # exact: 1 of C(12, 3) labellings
    assert "3 non-members" in M.coarse_note(9, 3) and M.coarse_note(30, 100) == ""
    assert "n/a" in M.describe(figures) and "9 members / 3 non-members" in M.describe(figures)


def test_heldout_patients_are_the_sites_own_and_never_its_training_cases():
    from fcl_ray.data import heldout_volumes, load_client_volumes, patient_of

    cfg = load_config(None, TINY + ["data.phantom=v2"])
    site = {patient_of(v.volume_id) for v in load_client_volumes(cfg, 1)}
    extra = heldout_volumes(cfg, 1, 3)
    patients = {patient_of(v.volume_id) for v in extra}
    assert len(patients) == 3 and not patients & site
    assert all(p.startswith("site01_") for p in patients)
    again = heldout_volumes(cfg, 1, 3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(extra, again))
    # case k of the held-out draw is the site's case k, had the site held more patients
    more = load_config(None, TINY + ["data.phantom=v2", "data.cases_per_client=7"])
    bigger = {v.volume_id: v.image for v in load_client_volumes(more, 1)}
    assert all(np.array_equal(v.image, bigger[v.volume_id]) for v in extra)
