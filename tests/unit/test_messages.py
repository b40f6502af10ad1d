"""Privacy: only weights, features with partition labels and scalars may leave a site."""
import numpy as np
import pytest
import torch

from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite
from fcl_ray.protocol.messages import ClientUpdate, Contract, MessageError, check_update

from conftest import TINY

CONTRACT = Contract(n_weights=10, feature_dim=4, partitions=2, max_features=8)


def _update(**changes):
    base = dict(client=1, weights=np.zeros(10, np.float32), n_samples=5,
                features=np.eye(4, dtype=np.float32)[:3], partitions=np.array([0, 1, 1], np.int16),
                metrics={"loss": 1.0})
    return ClientUpdate(**{**base, **changes})


def test_a_valid_update_passes():
    assert check_update(_update(), CONTRACT).client == 1
    assert check_update(_update(features=None, partitions=None), CONTRACT).features is None


@pytest.mark.parametrize("changes,message", [
    ({"features": np.zeros((3, 32, 32), np.float32)}, "features must be float32"),   # images
    ({"features": np.zeros((3, 1024), np.float32)}, "features must be float32"),     # flattened
    ({"features": np.zeros((9, 4), np.float32), "partitions": np.zeros(9, np.int16)},
     "n <= 8"),                                                                         # too many
    ({"features": np.zeros((3, 4), np.float64)}, "features must be float32"),
    ({"partitions": np.array([0, 1, 2])}, "partition labels must be 3 integers in [0, 2)"),
    ({"partitions": None}, "partition labels must be"),
    ({"weights": np.zeros((2, 5), np.float32)}, "weights must be float32 of shape (10,)"),
    ({"weights": np.full(10, np.nan, np.float32)}, "NaN"),
    ({"n_samples": 0}, "n_samples must be a positive int"),
    ({"metrics": {"image": np.zeros((8, 8))}}, "metric 'image' is not a scalar"),
    ({"features": None}, "partition labels sent without features"),
])
def test_anything_else_is_rejected_naming_client_and_field(changes, message):
    with pytest.raises(MessageError) as err:
        check_update(_update(**changes), CONTRACT)
    assert message in str(err.value) and "client 1" in str(err.value)


def test_raw_payloads_are_rejected():
    with pytest.raises(MessageError, match="expected a ClientUpdate"):
        check_update({"client": 0, "image": np.zeros((1, 64, 64))}, CONTRACT)


def test_a_real_round_sends_nothing_shaped_like_an_image():
    """Run a client (the actor class, in-process) for one round and inspect its message."""
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + ["data.image_size=32"])
    client = ClientSite(to_dict(cfg), client_id=0, num_threads=1)
    info = client.start_pretraining("fcl", fold=0)
    update = client.pretrain_round(None, None)
    contract = Contract(info["n_weights"], info["feature_dim"], cfg.data.partitions,
                        cfg.pretrain.exchange_size)
    check_update(update, contract)
    arrays = [a for a in vars(update).values() if isinstance(a, np.ndarray)]
    assert arrays and all(a.ndim <= 2 for a in arrays)
    image_size = cfg.data.image_size
    assert all(image_size not in a.shape and image_size ** 2 not in a.shape[1:] for a in arrays
               if a.ndim == 2)
    assert update.features.shape == (cfg.pretrain.exchange_size, cfg.model.projection_dim)


def test_the_site_refuses_to_send_an_image_sized_array(monkeypatch):
    """The contract is checked at the site, before anything leaves it (issue 30): a method
    that would share image-sized rows gets a MessageError in its own process, so no bytes go
    out; the coordinator's check on arrival stays as a second line."""
    torch.set_num_threads(1)
    cfg = load_config(None, TINY + ["data.image_size=32"])
    site = ClientSite(to_dict(cfg), client_id=0, num_threads=1)
    site.start_pretraining("fcl", fold=0)
    images = site.slices.images[:4].reshape(4, -1).numpy().astype(np.float32)   # (4, 1024)
    monkeypatch.setattr(site.method, "shared_features",
                        lambda: (images, np.zeros(4, np.int64)))
    with pytest.raises(MessageError, match=r"^client 0: features must be float32 "
                                           r"\(n <= 8, 16\), got float32 \(4, 1024\)"):
        site.pretrain_round(None, None)
