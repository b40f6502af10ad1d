import numpy as np
import pytest
import torch

from fcl_ray.protocol.aggregation import fedavg
from fcl_ray.protocol.weights import WeightLayout


def test_fedavg_weights_by_samples():
    a, b = np.array([1.0, 0.0], np.float32), np.array([4.0, 3.0], np.float32)
    out = fedavg([a, b], [1, 2])
    np.testing.assert_allclose(out, [3.0, 2.0])
    assert out.dtype == np.float32


def test_fedavg_of_identical_updates_is_identity():
    v = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    np.testing.assert_allclose(fedavg([v, v, v], [3, 5, 7]), v, rtol=1e-6)


@pytest.mark.parametrize("vectors,counts,match", [
    ([], [], "at least one"),
    ([np.ones(2)], [1, 2], "one sample count"),
    ([np.ones(2)], [0], "more than zero"),
])
def test_fedavg_rejects_bad_input(vectors, counts, match):
    with pytest.raises(ValueError, match=match):
        fedavg(vectors, counts)


def test_layout_round_trip_keeps_shapes_and_dtypes():
    state = {"w": torch.randn(3, 4), "b": torch.randn(4), "steps": torch.tensor(7)}
    layout = WeightLayout(state)
    flat = layout.flatten(state)
    assert flat.shape == (17,) and flat.dtype == np.float32
    back = layout.unflatten(flat)
    assert torch.equal(back["w"], state["w"]) and back["steps"].dtype == torch.int64
    assert back["steps"].item() == 7
    with pytest.raises(ValueError, match="shape"):
        layout.unflatten(flat[:5])
