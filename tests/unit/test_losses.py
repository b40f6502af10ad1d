"""Loss values checked against numbers worked out by hand."""
import math

import pytest
import torch

from fcl_ray.methods.losses import contrastive_loss, fcl_losses, negative_mask, nt_xent_loss

E = math.e


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_single_positive_matches_hand_value():
    # q.k+ = 1, negatives q.n = 0 and -1, temperature 1:
    # l = -log(e / (e + 1 + 1/e)) = 0.407606...
    q = t([1.0, 0.0])
    loss = contrastive_loss(q, t([1.0, 0.0]), torch.tensor([[True]]),
                            t([0.0, 1.0], [-1.0, 0.0]), torch.tensor([[True, True]]), 1.0)
    assert loss.item() == pytest.approx(-math.log(E / (E + 1 + 1 / E)), abs=1e-6)
    assert loss.item() == pytest.approx(0.407606, abs=1e-5)


def test_two_positives_are_averaged():
    # P: dots 1 and 0; N: dot -1.  l = 1/2 [log(1 + e^-2) + log(1 + e^-1)] = 0.220095...
    q = t([1.0, 0.0])
    loss = contrastive_loss(q, t([1.0, 0.0], [0.0, 1.0]), torch.tensor([[True, True]]),
                            t([-1.0, 0.0]), torch.tensor([[True]]), 1.0)
    assert loss.item() == pytest.approx(0.5 * (math.log(1 + E ** -2) + math.log(1 + E ** -1)),
                                        abs=1e-6)


def test_temperature_scales_logits():
    q = t([1.0, 0.0])
    loss = contrastive_loss(q, t([1.0, 0.0]), torch.tensor([[True]]), t([0.0, 1.0]),
                            torch.tensor([[True]]), 0.5)
    # -log(e^2 / (e^2 + e^0))
    assert loss.item() == pytest.approx(math.log(1 + E ** -2), abs=1e-6)


def test_queries_without_positives_are_ignored():
    q = t([1.0, 0.0], [0.0, 1.0])
    pos_mask = torch.tensor([[True], [False]])
    loss = contrastive_loss(q, t([1.0, 0.0]), pos_mask, t([0.0, 1.0]),
                            torch.tensor([[True], [True]]), 1.0)
    assert loss.item() == pytest.approx(math.log(1 + E ** -1), abs=1e-6)


def test_fcl_losses_use_partitions():
    # One query in partition 0. Batch keys: own view (dot 1, part 0), other slice (dot 0, part 1).
    # Q': a same-partition feature (dot 0.5) and an other-partition one (dot -1).
    q, q_parts = t([1.0, 0.0]), torch.tensor([0])
    k, k_parts = t([1.0, 0.0], [0.0, 1.0]), torch.tensor([0, 1])
    queue = t([0.5, math.sqrt(0.75)], [-1.0, 0.0])
    queue_parts = torch.tensor([0, 1])
    local, remote = fcl_losses(q, q_parts, k, k_parts, queue, queue_parts, 1.0, fresh="none")
    # Negatives = other partitions of Q' only: {dot -1}.
    assert local.item() == pytest.approx(math.log(1 + E ** -2), abs=1e-6)        # P = own view
    assert remote.item() == pytest.approx(math.log(1 + E ** -1.5), abs=1e-6)     # P = {0.5}
    # Literal reading: all of Q' in the denominator.
    local_all, remote_all = fcl_losses(q, q_parts, k, k_parts, queue, queue_parts, 1.0, "all",
                                       fresh="none")
    assert local_all.item() == pytest.approx(-math.log(E / (E + E ** 0.5 + E ** -1)), abs=1e-6)
    assert remote_all.item() == pytest.approx(
        -math.log(E ** 0.5 / (E ** 0.5 + E ** 0.5 + E ** -1)), abs=1e-6)


def test_fresh_batch_keys_join_the_negatives():
    # The setting above with fresh="keys": the batch key of partition 1 (dot 0) is a negative
    # too, beside Q''s other-partition row (dot -1); the own view stays the positive.
    q, q_parts = t([1.0, 0.0]), torch.tensor([0])
    k, k_parts = t([1.0, 0.0], [0.0, 1.0]), torch.tensor([0, 1])
    queue = t([0.5, math.sqrt(0.75)], [-1.0, 0.0])
    queue_parts = torch.tensor([0, 1])
    local, remote = fcl_losses(q, q_parts, k, k_parts, queue, queue_parts, 1.0, fresh="keys")
    assert local.item() == pytest.approx(math.log(1 + E ** -2 + E ** -1), abs=1e-6)
    assert remote.item() == pytest.approx(math.log(1 + E ** -1.5 + E ** -0.5), abs=1e-6)


def test_fresh_queries_and_remote_only_matching():
    # Two queries (partitions 0 and 1, orthogonal), their own keys equal to them, and one row
    # in Q' ([1, 0], partition 0). With keys_and_queries, query 0's negatives are key 1 and
    # query 1 (dots 0); query 1's are Q''s row, key 0 and query 0 (dots 0).
    q, parts = t([1.0, 0.0], [0.0, 1.0]), torch.tensor([0, 1])
    queue, queue_parts = t([1.0, 0.0]), torch.tensor([0])
    local, remote = fcl_losses(q, parts, q.clone(), parts, queue, queue_parts, 1.0,
                               fresh="keys_and_queries", queue_remote=torch.tensor([True]))
    assert local.item() == pytest.approx(
        0.5 * (math.log(1 + 2 / E) + math.log(1 + 3 / E)), abs=1e-6)
    # Lambda(q): only query 0 has a remote same-partition row (dot 1); query 1 has none.
    assert remote.item() == pytest.approx(math.log(1 + 2 / E), abs=1e-6)
    # The same row from the local bank is no structural-matching positive.
    _, no_remote = fcl_losses(q, parts, q.clone(), parts, queue, queue_parts, 1.0,
                              fresh="keys_and_queries", queue_remote=torch.tensor([False]))
    assert no_remote.item() == 0.0


def test_negative_mask_rules():
    qp, kp = torch.tensor([0, 1]), torch.tensor([0, 1, 1])
    assert negative_mask(qp, kp, "other_partitions").tolist() == [[False, True, True],
                                                                 [True, False, False]]
    assert negative_mask(qp, kp, "all").all()
    with pytest.raises(ValueError, match="unknown negatives rule"):
        negative_mask(qp, kp, "same")


def test_nt_xent_perfect_pairs_beat_random_pairs():
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    aligned = nt_xent_loss(z, z, 0.1)
    shuffled = nt_xent_loss(z, z.flip(0), 0.1)
    assert aligned.item() < shuffled.item()


def test_gradient_pulls_query_towards_positive():
    q = torch.nn.functional.normalize(t([1.0, 1.0]), dim=1).requires_grad_(True)
    pos, neg = t([1.0, 0.0]), t([0.0, 1.0])
    loss = contrastive_loss(q, pos, torch.tensor([[True]]), neg, torch.tensor([[True]]), 0.5)
    loss.backward()
    # Descending the gradient increases the x (positive) component, decreases y (negative).
    assert q.grad[0, 0] < 0 < q.grad[0, 1]
