"""Weights as views into one flat buffer (FlatWeights) and FedAvg into a given buffer."""
import numpy as np
import pytest
import torch
from torch import nn

from fcl_ray.protocol.aggregation import fedavg
from fcl_ray.protocol.weights import FlatWeights, WeightLayout


def _nets():
    torch.manual_seed(0)
    main = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3), nn.BatchNorm1d(3))
    main(torch.randn(2, 1, 6, 6))   # materialise the lazy layer
    return {"main": main, "momentum": nn.Linear(3, 2)}


def _state(nets):
    return {f"{n}.{k}": v for n, net in nets.items() for k, v in net.state_dict().items()}


def test_vector_equals_the_layout_flattening_and_load_equals_load_state_dict():
    nets = _nets()
    layout = WeightLayout(_state(nets))
    expected = layout.flatten(_state(nets))
    params = [p for net in nets.values() for p in net.parameters()]
    optimiser = torch.optim.Adam(params)
    weights = FlatWeights(nets, layout)
    np.testing.assert_array_equal(weights.vector(), expected)
    # The Parameter objects are the same (the optimiser still holds them), now views.
    assert [p for net in nets.values() for p in net.parameters()] == params
    assert all(p.data_ptr() >= weights.flat.data_ptr() for p in params)
    assert optimiser.param_groups[0]["params"][0] is params[0]

    other = np.random.default_rng(1).normal(size=layout.total).astype(np.float32)
    counter = layout.names.index("main.3.num_batches_tracked")
    other[sum(layout.sizes[:counter])] = 5.0
    other.setflags(write=False)          # as arrays from Ray's object store are
    weights.load(other)
    reference = _nets()
    for name, net in reference.items():
        net.load_state_dict({k[len(name) + 1:]: v for k, v in layout.unflatten(other).items()
                             if k.startswith(f"{name}.")})
    for got, want in zip(_state(nets).values(), _state(reference).values()):
        assert torch.equal(got, want)
    assert nets["main"][3].num_batches_tracked.dtype == torch.int64
    np.testing.assert_array_equal(weights.vector(), other)


def test_training_moves_the_flat_buffer_and_the_vector_is_a_copy():
    nets = _nets()
    weights = FlatWeights(nets, WeightLayout(_state(nets)))
    before = weights.vector()
    optimiser = torch.optim.SGD(nets["main"].parameters(), lr=0.1)
    nets["main"](torch.randn(4, 1, 6, 6)).sum().backward()
    optimiser.step()
    after = weights.vector()
    assert not np.array_equal(before, after)         # the step wrote into the buffer
    np.testing.assert_array_equal(after, weights.flat.numpy())
    after[0] += 1
    assert after[0] != weights.flat[0]               # what is sent is not the live buffer


def test_load_rejects_a_wrong_length():
    nets = _nets()
    weights = FlatWeights(nets, WeightLayout(_state(nets)))
    with pytest.raises(ValueError, match="shape"):
        weights.load(np.zeros(3, np.float32))


def test_fedavg_into_a_given_buffer_is_the_same_average():
    rng = np.random.default_rng(0)
    vectors = [rng.normal(size=257).astype(np.float32) for _ in range(5)]
    counts = [3, 5, 7, 2, 9]
    out = np.empty(257, np.float32)
    result = fedavg(vectors, counts, out=out)
    assert result is out
    np.testing.assert_array_equal(out, fedavg(vectors, counts))
    # The float64 sum of (n / N) * v, in client order: what the coordinator always computed.
    expected = np.zeros(257)
    for vec, n in zip(vectors, counts):
        expected += (n / sum(counts)) * vec
    np.testing.assert_array_equal(out, expected.astype(np.float32))
