"""Representation health: the figures on constructed embeddings, and the collapse guard on a
real federation that collapses on purpose (and one that does not)."""
import math

import pytest
import torch
from torch import nn

from fcl_ray.methods.health import (effective_rank, is_collapsed, probe_embeddings,
                            representation_health)


def test_one_point_is_collapsed_and_an_orthonormal_set_is_not():
    parts = torch.tensor([0, 0, 1, 1])
    same = representation_health(torch.ones(4, 8), parts)
    assert same["mean_cosine"] == pytest.approx(1.0)
    assert same["dim_std"] == pytest.approx(0.0, abs=1e-6)
    assert same["effective_rank"] == pytest.approx(1.0)
    assert is_collapsed(same, max_cosine=0.99, min_rank=1.5)
    spread = representation_health(torch.eye(4, 8), parts)
    assert spread["mean_cosine"] == pytest.approx(0.0)
    # Centred, 4 orthonormal rows span 3 equal directions: effective rank 3.
    assert spread["effective_rank"] == pytest.approx(3.0, abs=1e-4)
    assert not is_collapsed(spread, max_cosine=0.99, min_rank=1.5)
    assert math.isnan(spread["live_units"])        # no hidden layer given


def test_partition_gap_and_live_units():
    # Partition 0 rows point one way, partition 1 rows the other: gap = 1 - (-1) = 2.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    hidden = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    health = representation_health(z, torch.tensor([0, 0, 1, 1]), hidden)
    assert health["partition_gap"] == pytest.approx(2.0)
    assert health["live_units"] == pytest.approx(2 / 3)     # the third unit never fires


def test_effective_rank_of_a_line_is_one():
    line = torch.arange(10.0)[:, None] * torch.tensor([[1.0, 2.0, 3.0]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-4)


def test_probe_reads_the_heads_hidden_layer_and_restores_the_mode():
    head = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    net = nn.Sequential(nn.Identity(), head)
    net.train()
    out, hidden = probe_embeddings(net, head, torch.randn(7, 3))
    assert out.shape == (7, 2) and hidden.shape == (7, 5) and (hidden >= 0).all()
    assert net.training                            # put back in training mode
    assert not head[1]._forward_hooks             # the hook is removed


def test_probe_in_chunks_gives_the_figures_of_one_pass():
    """Eval mode (BatchNorm on running statistics): the chunk size must not change a figure."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    net = nn.Sequential(nn.Linear(3, 4), head)
    net(torch.randn(32, 3))                      # training mode: running statistics move
    images = torch.randn(11, 3)
    whole, hidden_whole = probe_embeddings(net, head, images, chunk=64)
    chunked, hidden_chunked = probe_embeddings(net, head, images, chunk=4)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert torch.allclose(hidden_whole, hidden_chunked, atol=1e-6)
    assert hidden_chunked.shape == (11, 6)
