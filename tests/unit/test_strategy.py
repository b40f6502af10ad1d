"""The federation's policy without Ray: which updates count, FedAvg, the feature pool, bytes."""
import numpy as np
import torch

from fcl_ray.core.participation import (generator_state, participant_generator,
                                        restore_generator, sample_participants)
from fcl_ray.core.events import Traffic
from fcl_ray.core.strategy import Strategy, received_feature_bytes
from fcl_ray.protocol.aggregation import fedavg
from fcl_ray.methods.bank import merge_remote
from fcl_ray.protocol.messages import ClientUpdate, Contract

CONTRACT = Contract(n_weights=6, feature_dim=4, partitions=2, max_features=8)


def _update(client, n_samples=2, n_features=3, fill=None):
    rng = np.random.default_rng(client)
    features = partitions = None
    if n_features:
        features = rng.normal(size=(n_features, 4)).astype(np.float32)
        partitions = (np.arange(n_features) % 2).astype(np.int16)
    weights = (np.full(6, fill, np.float32) if fill is not None
               else rng.normal(size=6).astype(np.float32))
    return ClientUpdate(client=client, weights=weights, n_samples=n_samples,
                        features=features, partitions=partitions, metrics={"loss": 1.0})


def test_select_keeps_valid_updates_in_client_order_and_says_why_others_are_out():
    bad_shape = _update(1)
    bad_shape.weights = np.zeros(5, np.float32)
    impostor = _update(0)                                  # client 3 answering as client 0
    answers = {2: _update(2), 0: _update(0), 1: bad_shape, 3: impostor, 4: "an image"}
    updates, rejected = Strategy(CONTRACT).select(answers)
    assert [u.client for u in updates] == [0, 2]
    assert sorted(rejected) == [1, 3, 4]
    assert rejected[1].startswith("rejected: client 1: weights must be float32 of shape (6,)")
    assert rejected[3] == "rejected: client 3 sent an update as client 0"
    assert rejected[4] == "rejected: expected a ClientUpdate, got str"


def test_enough_is_the_min_clients_rule():
    strategy = Strategy(CONTRACT, min_clients=2)
    assert not strategy.enough([_update(0)])
    assert strategy.enough([_update(0), _update(1)])


def test_aggregate_is_fedavg_by_samples_in_the_given_order():
    updates = [_update(0, n_samples=1, fill=1.0), _update(1, n_samples=3, fill=5.0)]
    out = Strategy(CONTRACT).aggregate_updates(updates, current=None)
    np.testing.assert_array_equal(out, np.full(6, 4.0, np.float32))
    updates = [_update(c, n_samples=c + 1) for c in range(3)]
    assert np.array_equal(Strategy(CONTRACT).aggregate_updates(updates, None),
                          fedavg([u.weights for u in updates], [1, 2, 3]))


def test_a_local_phase_keeps_the_current_weights():
    current = np.arange(6, dtype=np.float32)
    local = Strategy(CONTRACT, federated=False)
    assert local.aggregate_updates([_update(0), _update(1)], current) is current
    assert local.aggregate_updates([_update(0)], None) is None


def test_feature_pool_holds_every_client_that_shared_and_each_reads_the_others():
    updates = [_update(0), _update(1, n_features=0), _update(2, n_features=2)]
    pool = Strategy(CONTRACT).aggregate_feature_pool(updates)
    assert sorted(pool) == [0, 2]
    assert pool[0][0] is updates[0].features and pool[2][1] is updates[2].partitions
    feats, parts = merge_remote(pool, exclude=0)          # what client 0 trains with
    assert torch.equal(feats, torch.tensor(updates[2].features))
    assert parts.dtype == torch.long and parts.tolist() == [0, 1]


def test_traffic_counts_weights_both_ways_and_the_pool_each_client_read():
    updates = [_update(0, n_features=3), _update(1, n_features=2), _update(2, n_features=0)]
    global_weights = np.zeros(6, np.float32)               # 24 bytes down to each client
    up = {u.client: u.nbytes_features for u in updates}   # 3*4*4+3*2 = 54, 2*16+2*2 = 36, 0
    assert up == {0: 54, 1: 36, 2: 0}
    # The pool this round's clients were sent (last round's), here the same clients' features.
    pool = Strategy(CONTRACT).aggregate_feature_pool(updates)
    stats = Strategy(CONTRACT).traffic(updates, global_weights, pool)
    total = 54 + 36
    assert stats.bytes_weights == 3 * (24 + 24)
    assert stats.bytes_features == total + (total - 54) + (total - 36) + total
    assert stats.bytes_pool == total
    assert stats.bytes_sent_per_client == {"0": 24 + 54, "1": 24 + 36, "2": 24}
    assert stats.bytes_received_per_client == {"0": 24 + 36, "1": 24 + 54, "2": 24 + total}
    assert stats.bytes_per_client == {"0": 48 + 54 + (total - 54),
                                         "1": 48 + 36 + (total - 36),
                                         "2": 48 + total}
    # Round 1: nothing pooled yet, so no features come in.
    first = Strategy(CONTRACT).traffic(updates, global_weights, {})
    assert first.bytes_features == total and first.bytes_received_per_client["2"] == 24


def test_traffic_with_remote_sample_counts_the_rows_each_client_drew():
    updates = [_update(c, n_features=3) for c in range(4)]   # 3 rows of 4*4+2 = 18 bytes each
    pool = Strategy(CONTRACT).aggregate_feature_pool(updates)
    stats = Strategy(CONTRACT).traffic(updates, np.zeros(6, np.float32), pool, remote_sample=4)
    # 9 remote rows for each, 4 of them drawn: 4 * 18 bytes, not 9 * 18
    assert stats.bytes_received_per_client == {str(c): 24 + 4 * 18 for c in range(4)}
    assert stats.bytes_pool == 4 * 54
    roomy = Strategy(CONTRACT).traffic(updates, np.zeros(6, np.float32), pool, remote_sample=100)
    assert roomy.bytes_received_per_client["0"] == 24 + 3 * 54   # fewer rows than K: all
    assert received_feature_bytes(pool, 0, 9) == 9 * 18 == received_feature_bytes(pool, 0)


def test_traffic_of_a_local_phase_has_no_download_and_fine_tuning_no_features():
    updates = [_update(0, n_features=0), _update(1, n_features=0)]
    local = Strategy(CONTRACT, federated=False).traffic(updates, None)
    assert local == Traffic(bytes_weights=48, bytes_sent_per_client={"0": 24, "1": 24},
                            bytes_received_per_client={"0": 0, "1": 0},
                            bytes_per_client={"0": 24, "1": 24})
    assert local.bytes_features is None and local.bytes_pool is None


# ----------------------------------------------------------------------------- participation
def test_same_seed_gives_the_same_participants_and_another_fold_another_sequence():
    def sequence(seed, fold, rounds=6):
        rng = participant_generator(seed, fold)
        return [sample_participants(10, 3, rng) for _ in range(rounds)]

    assert sequence(0, 0) == sequence(0, 0)
    assert sequence(0, 0) != sequence(1, 0) and sequence(0, 0) != sequence(0, 1)
    assert all(len(r) == 3 and r == sorted(set(r)) and 0 <= r[0] and r[-1] < 10
               for r in sequence(0, 0))


def test_counts_and_fractions_of_clients():
    rng = participant_generator(0, 0)
    assert len(sample_participants(10, 0.25, rng)) == 3      # rounded up
    assert len(sample_participants(10, 0.3, rng)) == 3       # 0.3 * 10 is 3.0000000000000004
    assert len(sample_participants(3, 0.01, rng)) == 1       # never fewer than one
    assert sample_participants(4, 4, rng) == [0, 1, 2, 3]
    assert sample_participants(4, 1.0, rng) == [0, 1, 2, 3]


def test_all_clients_leave_the_generator_untouched():
    rng, fresh = participant_generator(0, 0), participant_generator(0, 0)
    assert sample_participants(5, None, rng) == [0, 1, 2, 3, 4]
    assert generator_state(rng) == generator_state(fresh)


def test_generator_state_round_trips_as_a_string_and_continues_the_sequence():
    rng = participant_generator(7, 0)
    [sample_participants(20, 5, rng) for _ in range(3)]
    saved = generator_state(rng)
    expected = [sample_participants(20, 5, rng) for _ in range(3)]
    resumed = participant_generator(7, 0)                    # a new process after a crash
    restore_generator(resumed, saved)
    assert [sample_participants(20, 5, resumed) for _ in range(3)] == expected


# ----------------------------------------------------------------------------- the seam (issue 30)
def test_every_configured_strategy_name_has_a_class_and_builds_from_the_config():
    from fcl_ray.config import STRATEGIES, FederationConfig
    from fcl_ray.core.strategy import REGISTRY, FedProx, make_strategy

    assert set(REGISTRY) == set(STRATEGIES) and all(REGISTRY[n].name == n for n in REGISTRY)
    fedavg = make_strategy(FederationConfig(min_clients=2), CONTRACT, federated=True)
    assert type(fedavg) is Strategy and fedavg.min_clients == 2
    prox = make_strategy(FederationConfig(strategy="fedprox", proximal_mu=0.5), CONTRACT, True)
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.5


def test_a_round_plan_names_the_clients_and_carries_the_strategys_config():
    from fcl_ray.core.strategy import FedProx

    plan = Strategy(CONTRACT).configure_round(3, clients=4)
    assert (plan.round, plan.clients, plan.config) == (3, [0, 1, 2, 3], {})
    rng = participant_generator(0, 0)
    sampled = Strategy(CONTRACT).configure_round(1, 4, clients_per_round=2, rng=rng)
    assert sampled.clients == sample_participants(4, 2, participant_generator(0, 0))
    assert FedProx(CONTRACT, proximal_mu=0.1).configure_round(1, 2).config == {"proximal_mu": 0.1}
    # Not federated (Local CL): no global model to stay near, so nothing is sent.
    assert FedProx(CONTRACT, federated=False, proximal_mu=0.1).round_config() == {}
    # FedProx combines as FedAvg does.
    updates = [_update(0, n_samples=1), _update(1, n_samples=3)]
    assert np.array_equal(FedProx(CONTRACT, proximal_mu=0.1).aggregate_updates(updates, None),
                          Strategy(CONTRACT).aggregate_updates(updates, None))


class _Federation:
    """A stand-in runtime for run_finetune: each round moves the weights one step on."""

    def __init__(self, scores):
        self.scores, self.rounds, self.weights = list(scores), 0, np.zeros(1, np.float32)

    def round(self):
        self.rounds += 1
        self.weights = np.full(1, self.rounds, np.float32)

    def validate(self):
        return self.scores.pop(0)


def test_run_finetune_runs_the_step_budget_or_stops_early_keeping_the_best_weights():
    from fcl_ray.config import FinetuneConfig

    steps = FinetuneConfig(budget="steps", local_steps=2)
    fed = _Federation([])
    best, outcome = Strategy(CONTRACT).run_finetune(steps, 3, fed.round, fed.validate,
                                                    lambda: fed.weights)
    assert best is None and fed.rounds == 3 and outcome == {"steps": 6}
    # converge: validate every 2 rounds (eval_every 4 / local_steps 2) up to 10 rounds; the
    # scores peak at the first validation, patience 2 stops after the third.
    converge = FinetuneConfig(budget="converge", local_steps=2, eval_every=4, max_steps=20,
                              patience=2)
    fed = _Federation([0.5, 0.4, 0.3, 0.9])
    best, outcome = Strategy(CONTRACT).run_finetune(converge, 0, fed.round, fed.validate,
                                                    lambda: fed.weights)
    assert fed.rounds == 6 and best.tolist() == [2.0]
    assert outcome == {"steps": 12, "best_step": 4, "val_dice": 0.5}
