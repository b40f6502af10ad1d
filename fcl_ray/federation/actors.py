"""The client actors: thin shells that run a :class:`~fcl_ray.federation.site.ClientSite`.

Why shells: Ray loads an actor's class, hence imports its module, in every process that
unpickles a handle to the actor, and the coordinator holds every client's handle. This module
therefore imports neither torch nor MONAI: a client process imports them when its site is
built (in ``__init__``), while the coordinator, which only averages NumPy vectors, never does
(~500 MB and seconds of CPU saved at start-up; tests/unit/test_architecture.py checks it).

- :class:`ClientActor`: one client per actor (the design); each call is passed to its site.
- :class:`ClientHost` + :class:`HostedClient`: ``federation.clients_per_actor`` > 1.
"""
from __future__ import annotations

from typing import Optional


def _new_site(cfg_dict: dict, client_id: int, num_threads: int, num_gpus: float):
    from fcl_ray.federation.site import ClientSite   # torch and MONAI: in this process only

    return ClientSite(cfg_dict, client_id, num_threads, num_gpus)


class ClientActor:
    """One client of the federation (wrapped with ``ray.remote`` by the driver). Every
    method is the :class:`~fcl_ray.federation.site.ClientSite` method of the same name;
    they are spelled out so the Ray dashboard names each call."""

    def __init__(self, cfg_dict: dict, client_id: int, num_threads: int, num_gpus: float = 0.0):
        self.site = _new_site(cfg_dict, client_id, num_threads, num_gpus)

    def info(self) -> dict:
        return self.site.info()

    def training_patients(self, fold: int) -> int:
        return self.site.training_patients(fold)

    def breakdown(self) -> dict:
        return self.site.breakdown()

    def start_pretraining(self, method_name: str, fold: int) -> dict:
        return self.site.start_pretraining(method_name, fold)

    def pretrain_round(self, global_weights, shared: Optional[dict],
                       round_index: Optional[int] = None, config: Optional[dict] = None):
        return self.site.pretrain_round(global_weights, shared, round_index, config)

    def save_state(self, store_root: str, path: str) -> None:
        return self.site.save_state(store_root, path)

    def load_state(self, store_root: str, path: str) -> bool:
        return self.site.load_state(store_root, path)

    def rejoin(self, setup: str, args: tuple, store_root: Optional[str] = None,
               phase: Optional[str] = None) -> dict:
        return self.site.rejoin(setup, args, store_root, phase)

    def probe(self, global_weights, fold: int, n_labeled: int) -> dict:
        return self.site.probe(global_weights, fold, n_labeled)

    def finish_pretraining(self, global_weights) -> dict:
        return self.site.finish_pretraining(global_weights)

    def start_supervised_encoder(self) -> dict:
        return self.site.start_supervised_encoder()

    def train_supervised_encoder(self, steps: int) -> float:
        return self.site.train_supervised_encoder(steps)

    def finish_supervised_encoder(self) -> dict:
        return self.site.finish_supervised_encoder()
    def probe_features(self, encoder_state: Optional[dict], fold: int) -> dict:
        return self.site.probe_features(encoder_state, fold)

    def segmentation_probe(self, encoder_state: Optional[dict], fold: int, n_labeled: int,
                           steps: int) -> float:
        return self.site.segmentation_probe(encoder_state, fold, n_labeled, steps)

    def finetune_local(self, encoder_state: Optional[dict], fold: int, n_labeled: int) -> dict:
        return self.site.finetune_local(encoder_state, fold, n_labeled)

    def start_federated_finetune(self, encoder_state: Optional[dict], fold: int,
                                 n_labeled: int) -> dict:
        return self.site.start_federated_finetune(encoder_state, fold, n_labeled)

    def finetune_round(self, global_weights, config: Optional[dict] = None):
        return self.site.finetune_round(global_weights, config)

    def validate_global(self, global_weights, fold: int) -> float:
        return self.site.validate_global(global_weights, fold)

    def finish_federated_finetune(self, global_weights, fold: int, n_labeled: int = 0) -> dict:
        return self.site.finish_federated_finetune(global_weights, fold, n_labeled)


class ClientHost:
    """Several logical clients in one actor process (``federation.clients_per_actor`` > 1).

    Each hosted client is a whole :class:`~fcl_ray.federation.site.ClientSite` (its own
    shard, networks, optimiser, feature bank and generators); the host only routes calls to
    them. An actor runs one call at a time, so within a round its clients train one after
    another, and every client sees exactly the calls, arguments and seeds it would see in its
    own actor: the results are the same. The coordinator talks to each hosted client through a
    :class:`HostedClient`, as it talks to a client actor. If the host dies, Ray restarts it and
    its ``__init__`` rebuilds all of its clients, which then rejoin like any restarted client.
    """

    def __init__(self, cfg_dict: dict, client_ids: list[int], num_threads: int,
                 num_gpus: float = 0.0):
        self.clients = {cid: _new_site(cfg_dict, cid, num_threads, num_gpus)
                        for cid in client_ids}

    def call(self, client_id: int, method: str, *args):
        """``clients[client_id].<method>(*args)``."""
        return getattr(self.clients[client_id], method)(*args)


class HostedClient:
    """A logical client inside a :class:`ClientHost`, used like a client actor handle:
    ``client.pretrain_round.remote(weights, shared)`` becomes
    ``host.call.remote(client_id, "pretrain_round", weights, shared)`` and returns its ref."""

    def __init__(self, host, client_id: int):
        self.host, self.client_id = host, client_id

    def __getattr__(self, method: str) -> "_HostedMethod":
        if method.startswith("_"):   # pickling and copy probe dunders: not client methods
            raise AttributeError(method)
        return _HostedMethod(self.host, self.client_id, method)

    @property
    def _actor_id(self):
        """The host actor's id (for the placement checks that read ``handle._actor_id``)."""
        return self.host._actor_id

    def __reduce__(self):
        return HostedClient, (self.host, self.client_id)


class _HostedMethod:
    def __init__(self, host, client_id: int, method: str):
        self.host, self.client_id, self.method = host, client_id, method

    def remote(self, *args):
        return self.host.call.remote(self.client_id, self.method, *args)
