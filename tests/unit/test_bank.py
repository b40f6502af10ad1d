import numpy as np
import torch

from fcl_ray.methods.bank import (FeatureBank, concat_banks, merge_remote, partition_quotas,
                                  sample_features)


def test_ring_buffer_keeps_newest_per_partition():
    bank = FeatureBank(partitions=2, capacity=3, dim=1)
    bank.push(torch.arange(5.0)[:, None], torch.zeros(5, dtype=torch.long))
    bank.push(torch.tensor([[10.0]]), torch.tensor([1]))
    feats, parts = bank.contents()
    assert sorted(feats[parts == 0].flatten().tolist()) == [2.0, 3.0, 4.0]
    assert feats[parts == 1].flatten().tolist() == [10.0]
    assert len(bank) == 4
    bank.push(torch.tensor([[5.0], [6.0]]), torch.tensor([0, 0]))   # wraps around
    feats, parts = bank.contents()
    assert sorted(feats[parts == 0].flatten().tolist()) == [4.0, 5.0, 6.0]


def test_sampling_is_uniform_without_replacement_and_seeded():
    feats = torch.arange(100.0)[:, None]
    parts = torch.arange(100) % 4
    a = sample_features(feats, parts, 10, torch.Generator().manual_seed(1))
    b = sample_features(feats, parts, 10, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and len(a[0].unique()) == 10
    assert torch.equal(a[1], a[0].flatten().long() % 4)      # labels travel with their rows
    small = sample_features(feats[:5], parts[:5], 10, torch.Generator())
    assert len(small[0]) == 5


def test_merge_remote_excludes_own_features_in_client_order():
    shared = {2: (torch.full((1, 2), 2.0).numpy(), torch.tensor([1]).numpy()),
              0: (torch.zeros(2, 2).numpy(), torch.tensor([0, 1]).numpy()),
              1: (torch.ones(1, 2).numpy(), torch.tensor([3]).numpy())}
    feats, parts = merge_remote(shared, exclude=1)
    assert feats[:, 0].tolist() == [0.0, 0.0, 2.0]
    assert parts.tolist() == [0, 1, 1]
    assert merge_remote({1: shared[1]}, exclude=1) is None


def test_concat_banks_skips_missing_pieces():
    local = (torch.zeros(2, 3), torch.tensor([0, 1]))
    feats, parts = concat_banks([local, None, (torch.ones(1, 3), torch.tensor([1]))])
    assert feats.shape == (3, 3) and parts.tolist() == [0, 1, 1]


def test_concat_banks_of_an_empty_bank_and_no_remote_rows_is_empty():
    empty = (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    feats, parts = concat_banks([empty, None])
    assert feats.shape == (0, 3) and len(parts) == 0


def test_partition_quotas_split_k_evenly_and_pass_on_what_a_partition_lacks():
    assert partition_quotas([10, 10, 10, 10], 8) == [2, 2, 2, 2]
    assert partition_quotas([1, 10, 10], 9) == [1, 4, 4]            # partition 0 gives 2 on
    assert partition_quotas([10, 10, 10], 7) == [2, 2, 3]
    assert partition_quotas([2, 3], 100) == [2, 3]                  # fewer rows than k: all
    assert sum(partition_quotas([5, 0, 7, 3], 11)) == 11


def _pool(clients=4, rows=12, partitions=3, dim=2):
    """Client c's row i: features (c, i), partition i % partitions."""
    return {c: (np.stack([np.full(rows, c), np.arange(rows)], 1).astype(np.float32)[:, :dim],
                (np.arange(rows) % partitions).astype(np.int16)) for c in range(clients)}


def test_merge_remote_with_a_sample_draws_k_rows_per_partition_from_the_others():
    pool = _pool()
    feats, parts = merge_remote(pool, exclude=1, sample=9, rng=np.random.default_rng(0))
    assert len(feats) == 9 and sorted(parts.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    owners = feats[:, 0].tolist()
    assert 1.0 not in owners and owners == sorted(owners)           # others only, client order
    # every row is a real row of its client, with its own partition label
    assert all(int(i) % 3 == p for i, p in zip(feats[:, 1].tolist(), parts.tolist()))
    again = merge_remote(pool, exclude=1, sample=9, rng=np.random.default_rng(0))
    assert torch.equal(feats, again[0])                             # same seed, same rows
    other = merge_remote(pool, exclude=1, sample=9, rng=np.random.default_rng(1))
    assert not torch.equal(feats, other[0])


def test_merge_remote_with_a_sample_larger_than_the_pool_is_the_whole_pool():
    pool = _pool(clients=3, rows=4)
    everything = merge_remote(pool, exclude=0)
    sampled = merge_remote(pool, exclude=0, sample=8, rng=np.random.default_rng(0))
    assert torch.equal(everything[0], sampled[0]) and torch.equal(everything[1], sampled[1])


def test_bf16_rows_from_an_autocast_forward_are_stored_in_the_banks_dtype():
    bank = FeatureBank(partitions=2, capacity=4, dim=2)
    rows = torch.tensor([[0.5, 1.0], [2.0, -1.0]], dtype=torch.bfloat16)
    bank.push(rows, torch.tensor([0, 1]))
    feats, parts = bank.contents()
    assert feats.dtype == torch.float32
    assert feats[parts == 1].tolist() == [[2.0, -1.0]]
