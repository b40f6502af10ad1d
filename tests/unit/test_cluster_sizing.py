"""CPUs per client from the nodes that will host them, and placement bundles (no Ray)."""
import pytest

from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config
from fcl_ray.federation.cluster import client_bundles, client_cpus

def _node(cpus: float, labels: dict | None = None, **custom) -> dict:
    return {"Alive": True, "Resources": {"CPU": cpus, "memory": 1e9, **custom},
            "Labels": {"ray.io/node-id": "x", **(labels or {})}}


# cluster/local.sh: a 1-CPU head and one 2-CPU worker per site
LOCAL_SH = [_node(1), _node(2, {"site": "a"}, site_a=1), _node(2, {"site": "b"}, site_b=1)]


def _cfg(*overrides):
    return load_config(None, ["data.clients=2", "federation.num_cpus_per_client=auto",
                              *overrides])


def test_auto_cpus_are_what_a_clients_node_offers_not_the_cluster_total():
    # README's multi-node example: before, 5 cluster CPUs / 2 clients = 2.5 > any node's 2
    pinned = _cfg("federation.client_resources=[{site_a: 1}, {site_b: 1}]")
    assert client_cpus(pinned, LOCAL_SH) == 2.0
    labelled = _cfg("federation.client_labels=[{site: a}, {site: b}]")
    assert client_cpus(labelled, LOCAL_SH) == 2.0
    # unpinned: any node may get both clients, so each gets half of a 2-CPU node
    assert client_cpus(_cfg(), LOCAL_SH) == 1.0
    # one machine: its CPUs split, rounded down so that the shares fit
    assert client_cpus(_cfg("data.clients=3"), [_node(2)]) == 0.66
    # two clients pinned to the same site share its node
    same = _cfg("federation.client_resources=[{site_a: 1}, {site_a: 1}]")
    assert client_cpus(same, LOCAL_SH) == 1.0
    # a configured number is used as is
    assert client_cpus(_cfg("federation.num_cpus_per_client=3"), LOCAL_SH) == 3


def test_client_bundles_carry_cpus_gpus_and_site_resources():
    cfg = _cfg("federation.client_resources=[{site_a: 1}, {site_b: 1}]",
               "federation.num_gpus_per_client=0.5")
    assert client_bundles(cfg, 2.0) == [{"CPU": 2.0, "GPU": 0.5, "site_a": 1},
                                        {"CPU": 2.0, "GPU": 0.5, "site_b": 1}]


def test_placement_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="federation.placement_timeout_s"):
        load_config(None, ["federation.placement_timeout_s=0"])


