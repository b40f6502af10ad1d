"""FedProx's proximal term (fcl_ray/methods/proximal.py) and its way into a site's round."""
import numpy as np
import torch

from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite
from fcl_ray.methods.proximal import ProximalTerm, proximal_term

from conftest import TINY


def test_the_term_is_half_mu_times_the_squared_distance_and_pulls_back_to_the_anchor():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    term = ProximalTerm([w], mu=0.5)
    assert term().item() == 0.0
    with torch.no_grad():
        w += torch.tensor([1.0, -2.0])
    value = term()
    value.backward()
    assert value.item() == 0.5 / 2 * (1 + 4)
    assert w.grad.tolist() == [0.5 * 1.0, 0.5 * -2.0]   # mu * (w - anchor)


def test_no_mu_in_the_round_config_means_no_term():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert proximal_term(params, None) is None and proximal_term(params, {}) is None
    assert proximal_term(params, {"proximal_mu": 0.0}) is None
    assert isinstance(proximal_term(params, {"proximal_mu": 0.1}), ProximalTerm)


def test_a_fine_tuning_round_with_mu_stays_nearer_the_global_model_and_without_is_unchanged():
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + ["finetune.local_steps=3"])
    site = ClientSite(to_dict(cfg), client_id=0, num_threads=1)

    def one_round(config):   # a fresh, seeded U-Net each time: the same start
        site.start_federated_finetune(None, 0, 1)
        start = site.ft_weights.vector()
        return start, site.finetune_round(start, config).weights

    start, plain = one_round(None)
    _, empty = one_round({})
    _, prox = one_round({"proximal_mu": 100.0})
    assert np.array_equal(plain, empty)   # FedAvg's empty config: the same numbers
    assert np.linalg.norm(prox - start) < 0.5 * np.linalg.norm(plain - start)
