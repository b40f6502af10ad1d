"""pretrain.sampler_seed moves a client's pre-training generator and nothing else (the
chaos drill's floor: two runs that differ only by chance)."""
import torch

from conftest import TINY
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite


def _site(sampler_seed: int) -> ClientSite:
    cfg = load_config(None, TINY + [f"pretrain.sampler_seed={sampler_seed}"])
    site = ClientSite(to_dict(cfg), client_id=0, num_threads=1)
    site.start_pretraining("fcl", 0)
    return site


def test_the_sampler_seed_changes_the_batches_not_the_data_or_the_start():
    unsalted, salted = _site(0), _site(1)
    # 0 keeps the stream of runs made before the key existed
    assert unsalted.method.gen.initial_seed() == unsalted._generator(1, 0).initial_seed()
    assert salted.method.gen.initial_seed() not in (unsalted.method.gen.initial_seed(),
                                                    unsalted._generator(1, 0, 0).initial_seed())
    # the same initial weights (the buffers differ: the bank is filled from drawn views)
    assert all(torch.equal(a, b) for a, b in zip(unsalted.method.net.parameters(),
                                                 salted.method.net.parameters()))
    assert torch.equal(unsalted.slices.images, salted.slices.images)      # same data
    assert unsalted._split(0).train == salted._split(0).train             # same split
