"""privacy.*: the accountant against closed forms, the mechanism at the site, the budget, and
the config's answers to bad input. No Ray."""
import math
import sys

import numpy as np
import pytest
import torch

from conftest import TINY
from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.privacy.accountant import (PrivacyLedger, RoundRelease, calibrate_noise_multiplier,
                                        epsilon, round_epsilon, sensitivity)
from fcl_ray.privacy.budget import PhaseBudget
from fcl_ray.privacy.mechanism import add_noise, choose_units, embed_rows, units_of
from method_fixtures import build_method, tiny_slices

DELTA = 1e-5


# ----------------------------------------------------------------------------- accountant
def _exact_gaussian_epsilon(z: float, delta: float) -> float:
    """The exact epsilon of one Gaussian release, noise z x sensitivity (Balle & Wang 2018):
    delta(eps) = Phi(1/(2z) - eps z) - e^eps Phi(-1/(2z) - eps z), solved by bisection."""
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))   # noqa: E731
    lo, hi = 0.0, 100.0
    for _ in range(200):
        eps = (lo + hi) / 2
        d = phi(1 / (2 * z) - eps * z) - math.exp(eps) * phi(-1 / (2 * z) - eps * z)
        lo, hi = (eps, hi) if d > delta else (lo, eps)
    return hi


def _classic_rdp_epsilon(z: float, delta: float, rounds: int) -> float:
    """Mironov's conversion of the Gaussian's RDP rounds * a / (2 z^2), best integer order."""
    return min(rounds * a / (2 * z * z) + math.log(1 / delta) / (a - 1) for a in range(2, 257))


@pytest.mark.parametrize("z, rounds", [(1.0, 1), (2.0, 1), (1.5, 10)])
def test_unsampled_release_lies_between_the_exact_gaussian_and_the_classic_bound(z, rounds):
    # every unit released (sampled = population): the plain Gaussian mechanism
    eps = epsilon({RoundRelease(20, 20, z): rounds}, DELTA)
    exact = _exact_gaussian_epsilon(z / math.sqrt(rounds), DELTA)   # R Gaussians = one, z/sqrt(R)
    assert exact <= eps <= _classic_rdp_epsilon(z, DELTA, rounds) + 1e-9
    assert eps < 1.3 * exact   # RDP's loss over the exact curve is small here


def test_epsilon_grows_with_rounds_and_sampling_and_falls_with_noise():
    base = epsilon({RoundRelease(100, 10, 1.0): 5}, DELTA)
    assert epsilon({RoundRelease(100, 10, 1.0): 10}, DELTA) > base
    assert epsilon({RoundRelease(100, 20, 1.0): 5}, DELTA) > base
    assert epsilon({RoundRelease(100, 10, 2.0): 5}, DELTA) < base
    # sampling 10 of 100 spends less than releasing everyone
    assert base < epsilon({RoundRelease(100, 100, 1.0): 5}, DELTA)


def test_no_rounds_cost_nothing_and_no_noise_costs_everything():
    assert epsilon({}, DELTA) == 0.0
    assert epsilon({RoundRelease(10, 5, 1.0): 0}, DELTA) == 0.0
    assert epsilon({RoundRelease(10, 5, 0.0): 1}, DELTA) == math.inf


def test_calibrated_multiplier_spends_the_target():
    z = calibrate_noise_multiplier(4.0, DELTA, 3, 20, 8)
    spent = epsilon({RoundRelease(20, 8, z): 3}, DELTA)
    assert 3.9 <= spent <= 4.0 + 1e-6


def test_sensitivity_of_a_slice_and_of_a_patient():
    assert sensitivity("slice") == 2.0
    assert sensitivity("patient", 4) == 4.0
    with pytest.raises(ValueError):
        sensitivity("frame")


def test_ledger_counts_every_attempt_and_sees_the_budget_coming():
    release = RoundRelease(30, 10, 1.0)
    ledger = PrivacyLedger({0: release, 1: release}, DELTA)
    ledger.record(0, 2)   # a retried round: two releases
    assert ledger.epsilon(0) == pytest.approx(epsilon({release: 2}, DELTA))
    assert ledger.epsilon(1) == 0.0
    assert ledger.epsilon_after_next(0) == pytest.approx(epsilon({release: 3}, DELTA))
    limit = (ledger.epsilon(0) + ledger.epsilon_after_next(0)) / 2
    assert set(ledger.over_budget(limit)) == {0}


# ----------------------------------------------------------------------------- budget (driver)
def _cfg(*overrides):
    return load_config(None, TINY + ["privacy.feature_noise_multiplier=1.0", *overrides])


def _round(n, sampled=(0, 1), retries=0):
    return n, list(sampled), retries


@pytest.mark.parametrize("on_budget, rounds_run", [("stop", 2), ("warn", 4)])
def test_budget_stops_before_the_round_that_would_exceed_it_or_warns(on_budget, rounds_run):
    release = {"population": 10, "sampled": 8, "noise_multiplier": 1.0}
    two = epsilon({RoundRelease(**release): 2}, DELTA)
    three = epsilon({RoundRelease(**release): 3}, DELTA)
    cfg = _cfg(f"privacy.max_epsilon={(two + three) / 2}", f"privacy.on_budget={on_budget}",
               "pretrain.rounds=4")
    budget = PhaseBudget.for_phase(cfg, {"privacy": {0: release, 1: release}}, "fcl")
    lines, ran = [], 0
    for r in range(1, 5):
        if not budget.may_run_round(r, lines.append):
            break
        budget.after_round(*_round(r))
        ran += 1
    assert ran == rounds_run
    assert budget.epsilons()[0] == pytest.approx(two if on_budget == "stop" else
                                                 epsilon({RoundRelease(**release): 4}, DELTA))
    assert (budget.stopped is not None) == (on_budget == "stop")
    assert len(lines) == (1 if on_budget == "stop" else 0)
    summary = budget.summary()
    assert summary["clients"]["1"]["releases"] == rounds_run


def test_budget_counts_sampled_clients_and_retries_only():
    release = {"population": 10, "sampled": 8, "noise_multiplier": 1.0}
    budget = PhaseBudget(_cfg(), {0: release, 1: release}, 0, "fcl")
    budget.after_round(*_round(1, sampled=[1], retries=1))
    eps = budget.epsilons()
    assert eps[0] == 0.0
    assert eps[1] == pytest.approx(epsilon({RoundRelease(**release): 2}, DELTA))
    assert budget.record(eps)["epsilon"]["1"] == eps[1]


def test_a_budget_below_one_rounds_spend_of_a_site_is_a_config_error():
    # what the driver checks once the sites have their pools (data on disk)
    cfg = _cfg("privacy.max_epsilon=30")
    releases = {0: {"population": 10, "sampled": 8, "noise_multiplier": 0.1}}
    with pytest.raises(ConfigError, match="privacy.max_epsilon.*one round's spend of client 0"):
        PhaseBudget.for_phase(cfg, {"privacy": releases}, "fcl")


# ----------------------------------------------------------------------------- mechanism
def test_units_are_slices_or_patients():
    patients = torch.tensor([0, 0, 1, 1, 1, 2])
    assert len(units_of("slice", 6, patients)) == 6
    groups = units_of("patient", 6, patients)
    assert [g.tolist() for g in groups] == [[0, 1], [2, 3, 4], [5]]


def test_chosen_units_are_distinct_and_capped_per_unit():
    units = units_of("patient", 9, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    idx = choose_units(units, 2, 2, torch.Generator().manual_seed(0))
    patients = idx // 3
    assert len(idx) == 4 and len(set(idx.tolist())) == 4
    assert sorted(torch.bincount(patients).tolist()) in ([0, 2, 2], [2, 2])


def test_noise_keeps_rows_unit_length_and_zero_noise_changes_nothing():
    rows = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(add_noise(rows, 0.0, gen), rows)
    noised = add_noise(rows, 0.5, gen)
    assert torch.allclose(noised.norm(dim=1), torch.ones(5))
    assert not torch.allclose(noised, rows)


def test_a_row_depends_on_its_own_slice_only():
    # the sensitivity bound needs it: no BatchNorm batch statistics across slices
    method = build_method("fcl", overrides=["privacy.feature_noise_multiplier=1.0"])
    net = method.momentum_net
    images = method.slices.images[:6].clone()
    before = embed_rows(net, images)
    images[1:] = torch.rand_like(images[1:])
    after = embed_rows(net, images)
    assert torch.allclose(before[0], after[0], atol=1e-6)
    assert net.training   # the caller's mode is restored


def test_fcl_shares_the_accounted_release_at_the_site():
    slices = tiny_slices()
    method = build_method("fcl", slices, ["privacy.feature_noise_multiplier=0.5"])
    assert method.release == RoundRelease(len(slices), 8, 0.5)   # exchange_size=8 of the pool
    feats, parts = method.shared_features()
    assert feats.shape == (8, 16) and feats.dtype == np.float32 and parts.dtype == np.int16
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    # the noise is there: no shared row is any slice's clean row
    clean = embed_rows(method.momentum_net, slices.images).numpy()
    assert (feats @ clean.T).max() < 0.999


def test_patient_unit_shares_rows_per_patient_of_sampled_patients():
    slices = tiny_slices()
    # tiny_slices has no patient tensor: every volume is its own patient
    slices.patient = slices.volume.clone()
    method = build_method("fcl", slices, ["privacy.feature_noise_multiplier=1.0",
                                          "privacy.unit=patient", "privacy.rows_per_patient=2"])
    assert method.release == RoundRelease(4, 4, 1.0)   # 8 // 2 = 4 patients of 4
    feats, _ = method.shared_features()
    assert feats.shape == (8, 16)


def test_without_privacy_the_bank_sample_is_shared_as_before():
    method = build_method("fcl")
    assert method.release is None
    feats, _ = method.shared_features()
    assert feats.shape == (8, 16)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("overrides, key", [
    (["privacy.feature_noise_multiplier=-1"], "privacy.feature_noise_multiplier"),
    (["privacy.feature_noise_multiplier=.inf"], "privacy.feature_noise_multiplier"),
    (["privacy.feature_epsilon=0"], "privacy.feature_epsilon"),
    (["privacy.feature_epsilon=.nan"], "privacy.feature_epsilon"),
    (["privacy.feature_epsilon=1", "privacy.feature_noise_multiplier=1"],
     "privacy.feature_epsilon"),
    (["privacy.feature_epsilon=1", "privacy.delta=0"], "privacy.delta"),
    (["privacy.feature_epsilon=1", "privacy.delta=1"], "privacy.delta"),
    (["privacy.feature_epsilon=1", "privacy.max_epsilon=-2"], "privacy.max_epsilon"),
    (["privacy.feature_epsilon=1", "privacy.on_budget=halt"], "privacy.on_budget"),
    (["privacy.feature_epsilon=1", "privacy.unit=frame"], "privacy.unit"),
    (["privacy.feature_epsilon=1", "privacy.rows_per_patient=9"], "privacy.rows_per_patient"),
    (["privacy.max_epsilon=5"], "privacy.max_epsilon"),   # a budget with no mechanism
    (["privacy.feature_epsilon=1", "pretrain.feature_noise=0.1"], "pretrain.feature_noise"),
    # one round spends ~4.6 at multiplier 1 on the tiny pools: a budget of 1 cannot hold it
    (["privacy.feature_noise_multiplier=1", "privacy.max_epsilon=1"], "privacy.max_epsilon"),
])
def test_bad_privacy_input_is_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, TINY + overrides)
    message = str(err.value)
    assert f"'{key}'" in message and "\n" not in message


def test_a_budget_one_round_can_hold_is_accepted():
    cfg = load_config(None, TINY + ["privacy.feature_noise_multiplier=1",
                                    "privacy.max_epsilon=20"])
    assert cfg.privacy.enabled and cfg.privacy.max_epsilon == 20


def test_privacy_keys_without_the_extra_are_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)   # as if not installed
    with pytest.raises(ConfigError, match=r"privacy.feature_noise_multiplier.*fcl-ray\[privacy\]"):
        load_config(None, TINY + ["privacy.feature_noise_multiplier=1"])
    assert not load_config(None, TINY).privacy.enabled   # no privacy keys: nothing needed


def test_cli_exit_code_2_for_bad_privacy_input(capsys):
    from fcl_ray.cli import main

    assert main(["config", "--set", "privacy.delta=2", "--set",
                 "privacy.feature_epsilon=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "privacy.delta" in err


def test_privacy_runs_let_client_actors_import_the_accountant(monkeypatch):
    from fcl_ray.federation.cluster import client_runtime_env
    from fcl_ray.federation.lean import BLOCK_VARIABLE

    monkeypatch.delenv("FCL_RAY_LEAN_ACTORS", raising=False)
    lean = client_runtime_env()["runtime_env"]["env_vars"][BLOCK_VARIABLE].split(",")
    private = client_runtime_env(True)["runtime_env"]["env_vars"][BLOCK_VARIABLE].split(",")
    assert "scipy.signal" in lean and "scipy.signal" not in private   # dp-accounting needs it
    assert "mlflow" in private
