"""Every registered method saves and restores its whole state: resuming continues exactly."""
import pytest
import torch

from fcl_ray.config import load_config
from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_site
from fcl_ray.methods import get_method_class, registered_methods

from conftest import TINY

METHODS = [m for m in registered_methods() if get_method_class(m) is not None]


def _build(name):
    cfg = load_config(None, TINY)
    vols = make_site(0, 0, 4, 32, (4, 5))
    slices = volumes_to_slices([v.image for v in vols], [None] * 4, 2)
    torch.manual_seed(0)
    return get_method_class(name)(cfg, slices, torch.Generator().manual_seed(1),
                                  torch.device("cpu"))


@pytest.mark.parametrize("name", METHODS)
def test_restored_method_continues_bit_for_bit(name):
    torch.set_num_threads(1)
    original = _build(name)
    original.train_round(2, None)
    saved = original.checkpoint_state()
    expected = original.train_round(2, None)
    expected_weights = original.shared_state()

    restored = _build(name)               # a fresh process would build it the same way
    restored.load_checkpoint_state(saved)
    assert restored.train_round(2, None) == expected
    for key, value in restored.shared_state().items():
        assert torch.equal(value, expected_weights[key]), key
