"""pretrain.momentum_schedule: the pure schedule, its use in the EMA update, and its position
across rounds, restarts and checkpoints."""
import math

import pytest
import torch

from fcl_ray.methods.schedules import momentum_at

from method_fixtures import build_method


def test_constant_schedule_is_the_momentum_at_every_step():
    assert {momentum_at(k, 10, 0.99, 0.999) for k in range(-1, 15)} == {0.99}


def test_cosine_schedule_rises_along_a_half_cosine_from_momentum_to_end():
    K = 150
    values = [momentum_at(k, K, 0.99, 0.999, "cosine") for k in range(K + 1)]
    assert values[0] == pytest.approx(0.99, abs=1e-15)
    assert values[K // 2] == pytest.approx((0.99 + 0.999) / 2, abs=1e-12)
    assert values[K] == pytest.approx(0.999, abs=1e-15)
    assert all(a < b for a, b in zip(values, values[1:]))      # strictly rising
    assert momentum_at(K + 7, K, 0.99, 0.999, "cosine") == values[K]   # past the end: the end
    # BYOL's formula, m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2, is the end=1 case
    for k in (0, 1, 37, 100, K):
        byol = 1 - (1 - 0.996) * (math.cos(math.pi * k / K) + 1) / 2
        assert momentum_at(k, K, 0.996, 1.0, "cosine") == pytest.approx(byol, abs=1e-15)
    with pytest.raises(ValueError, match="unknown momentum schedule"):
        momentum_at(0, K, 0.99, 0.999, "linear")


COSINE = ["pretrain.momentum_schedule=cosine", "pretrain.momentum=0.5",
          "pretrain.momentum_end=0.9"]   # TINY: 2 rounds x 2 local steps = 4 steps


@pytest.mark.parametrize("name", ["fcl", "fedca"])
def test_the_momentum_update_uses_the_scheduled_factor(name):
    method = build_method(name, overrides=COSINE)
    method.start_round(2)                                    # steps 2 and 3 of 4
    assert int(method.momentum_step) == 2
    main = [p.detach().clone() for p in method.net.parameters()]
    ema = [p.detach().clone() for p in method.momentum_net.parameters()]
    method._momentum_update()
    m = momentum_at(2, 4, 0.5, 0.9, "cosine")
    assert m == pytest.approx(0.7)
    for before, weights, after in zip(ema, main, method.momentum_net.parameters()):
        assert torch.allclose(after, m * before + (1 - m) * weights, atol=1e-6)
    assert int(method.momentum_step) == 3


def test_a_restarted_client_and_a_resumed_one_are_where_the_others_are():
    ran = build_method("fcl", overrides=COSINE)
    for round_index in (1, 2):
        ran.start_round(round_index)
        ran.train_round(2, None)
    assert int(ran.momentum_step) == 4
    fresh = build_method("fcl", overrides=COSINE)   # a client rebuilt after round 1
    fresh.start_round(2)
    assert int(fresh.momentum_step) == 2
    resumed = build_method("fcl", overrides=COSINE)
    resumed.load_checkpoint_state(ran.checkpoint_state())
    assert int(resumed.momentum_step) == 4          # the position is in the client's file


def test_a_site_places_the_schedule_at_the_federations_round():
    from conftest import TINY
    from fcl_ray.config_io import load_config, to_dict
    from fcl_ray.federation.site import ClientSite

    site = ClientSite(to_dict(load_config(None, TINY + COSINE)), client_id=0, num_threads=1)
    site.start_pretraining("fcl", fold=0)
    site.pretrain_round(None, None, round_index=2)   # sat round 1 out: starts at step 2
    assert int(site.method.momentum_step) == 2 + 2


def test_a_checkpoint_from_before_the_schedule_still_resumes():
    ran = build_method("fcl", overrides=COSINE)
    ran.train_round(2, None)
    old_file = {k: v for k, v in ran.checkpoint_state().items() if k != "momentum_step"}
    resumed = build_method("fcl", overrides=COSINE)
    resumed.load_checkpoint_state(old_file)
    resumed.start_round(2)
    assert int(resumed.momentum_step) == 2
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.parameters(), ran.net.parameters()))
