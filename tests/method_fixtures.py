"""A pre-training method on tiny phantom slices, as the method and checkpoint tests build it."""
import torch

from conftest import TINY
from fcl_ray.config_io import load_config
from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_site
from fcl_ray.methods import get_method_class


def tiny_slices():
    """Site 0's first 4 synthetic volumes (32 px, 4-5 slices each), 2 partitions."""
    vols = make_site(0, 0, 4, 32, (4, 5))
    return volumes_to_slices([v.image for v in vols], [None] * len(vols), 2)


def build_method(name, slices=None, overrides=(), generator_seed=0):
    """Method ``name`` on ``slices`` (default: :func:`tiny_slices`), same weights every call."""
    cfg = load_config(None, TINY + list(overrides))
    slices = tiny_slices() if slices is None else slices
    torch.manual_seed(0)
    return get_method_class(name)(cfg, slices, torch.Generator().manual_seed(generator_seed),
                                  torch.device("cpu"))


def remote_features(method):
    """Features as another client would share them (this client's own, reused), or None."""
    shared = method.shared_features()
    if shared is None:
        return None
    return torch.tensor(shared[0]), torch.tensor(shared[1], dtype=torch.long)
