"""federation.strategy through a real Ray federation: FedProx's mu reaches every client in
the round's config (issue 30); FedAvg, the default, is tested everywhere else."""
import pytest
import torch

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import run_experiment

pytestmark = pytest.mark.integration


def test_fedprox_changes_the_federated_model_and_fedavg_is_the_default(ray_session,
                                                                         tiny_overrides, tmp_path):
    common = ["pretrain.methods=[fcl]", "finetune.modes=[federated]", "tracking.enabled=false"]
    runs = {}
    for name, extra in (("fedavg", []), ("fedprox", ["federation.strategy=fedprox",
                                                     "federation.proximal_mu=10.0"])):
        out = tmp_path / name
        cfg = load_config(None, tiny_overrides + common + extra + [f"experiment.output_dir={out}"])
        results = run_experiment(cfg, log=lambda line: None)
        runs[name] = (results, torch.load(out / "encoders" / "fcl-fold0.pt"))
    (avg, avg_encoder), (prox, prox_encoder) = runs["fedavg"], runs["fedprox"]
    assert len(prox) == len(avg) == 2 and prox["dice_mean"].between(0, 1).all()
    # The same seed, data and first local step (the term is 0 where a round starts): the
    # pre-trained encoders differ only because the clients added mu/2 ||w - w_global||^2.
    assert avg_encoder.keys() == prox_encoder.keys()
    assert any(not torch.equal(avg_encoder[k], prox_encoder[k]) for k in avg_encoder
               if avg_encoder[k].is_floating_point())
