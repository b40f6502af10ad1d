"""The federation's policy, free of Ray: which client updates count, how they are combined,
what is pooled for the next round, and what a round costs in bytes.

The :class:`~fcl_ray.federation.coordinator.Coordinator` moves the messages (Ray calls,
deadlines, restarts, checkpoints) and keeps the state between rounds; every decision it makes
about the messages themselves is here, so it can be tested with plain ``ClientUpdate``\\ s.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from fcl_ray.config import participants_per_round
from fcl_ray.protocol.aggregation import fedavg
from fcl_ray.protocol.messages import ClientUpdate, Contract, MessageError, check_update

SharedFeatures = dict[int, tuple[np.ndarray, np.ndarray]]   # client -> (features, partitions)
PARTICIPATION_SALT = 21   # keeps the participant stream apart from every other seeded stream


# ----------------------------------------------------------------------------- participation
def participant_generator(seed: int, fold: int) -> np.random.Generator:
    """The seeded generator that draws a phase's participants. Every method of a fold gets the
    same sequence, so methods are compared on the same rounds' clients."""
    return np.random.default_rng(np.random.SeedSequence([seed, PARTICIPATION_SALT, fold]))


def sample_participants(clients: int, clients_per_round: Union[int, float, None],
                        rng: np.random.Generator) -> list[int]:
    """This round's participants, sorted: all clients when ``clients_per_round`` is None
    (``rng`` untouched, so runs without sampling are what they were), else a uniform draw
    without replacement of :func:`participants_per_round` of them."""
    count = participants_per_round(clients, clients_per_round)
    if count >= clients:
        return list(range(clients))
    return sorted(int(c) for c in rng.choice(clients, size=count, replace=False))


def generator_state(rng: np.random.Generator) -> str:
    """The generator's state as JSON (its 128-bit integers do not fit a NumPy integer array;
    a string does, and the coordinator's .npz is read without pickle)."""
    return json.dumps(rng.bit_generator.state)


def restore_generator(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


@dataclass(frozen=True)
class Strategy:
    """FedAvg over the valid updates of a round, for one phase (pre-training a method, or
    federated fine-tuning)."""

    contract: Contract        # what a valid update looks like in this phase
    federated: bool = True    # False: weights stay at each client (e.g. Local CL), no FedAvg
    min_clients: int = 1      # fewer valid updates than this: the round is retried

    def select(self, answers: dict[int, object]) -> tuple[list[ClientUpdate], dict[int, str]]:
        """The updates that count, in client-id order (so FedAvg's floating-point sum is
        reproducible), and why each other answer was rejected."""
        updates, rejected = [], {}
        for cid in sorted(answers):
            answer = answers[cid]
            try:
                update = check_update(answer, self.contract)
                if update.client != cid:   # else it could overwrite another's features
                    raise MessageError(f"client {cid} sent an update as client {update.client}")
                updates.append(update)
            except MessageError as err:
                rejected[cid] = f"rejected: {err}"
        return updates, rejected

    def enough(self, updates: list[ClientUpdate]) -> bool:
        return len(updates) >= self.min_clients

    def aggregate(self, updates: list[ClientUpdate],
                  current: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The new global weights: FedAvg weighted by sample counts, or ``current``
        (unchanged) when the phase is not federated."""
        if not self.federated:
            return current
        return fedavg([u.weights for u in updates], [u.n_samples for u in updates])

    @staticmethod
    def feature_pool(updates: list[ClientUpdate]) -> SharedFeatures:
        """What the next round broadcasts: every client's shared features. Each client
        leaves out its own when it reads the pool (``bank.merge_remote``)."""
        return {u.client: (u.features, u.partitions) for u in updates if u.features is not None}

    def traffic(self, updates: list[ClientUpdate], global_weights: Optional[np.ndarray],
                pool: Optional[SharedFeatures] = None,
                remote_sample: Optional[int] = None) -> dict:
        """Bytes a round moved, per client (sent, received, and their sum) and in total.

        Weights: sent, each client's vector; received, the global vector (when federated).
        With ``pool`` (the features broadcast this round; pre-training): sent, each client's
        own shared features; received, the pool's rows of the other clients, or, with
        ``remote_sample``, the at most that many rows the client drew from them. ``bytes_pool``
        is the size of the one pool object all clients read (what a node fetches)."""
        down = global_weights.nbytes if self.federated else 0
        features_in = {u.client: 0 if pool is None
                       else received_feature_bytes(pool, u.client, remote_sample)
                       for u in updates}
        sent = {u.client: u.nbytes_weights + u.nbytes_features for u in updates}
        received = {u.client: down + features_in[u.client] for u in updates}
        stats = {"bytes_weights": sum(u.nbytes_weights + down for u in updates)}
        if pool is not None:
            stats["bytes_features"] = (sum(u.nbytes_features for u in updates)
                                       + sum(features_in.values()))
            stats["bytes_pool"] = sum(f.nbytes + p.nbytes for f, p in pool.values())
        stats["bytes_sent_per_client"] = {str(c): b for c, b in sent.items()}
        stats["bytes_received_per_client"] = {str(c): b for c, b in received.items()}
        stats["bytes_per_client"] = {str(c): sent[c] + received[c] for c in sent}
        return stats


def received_feature_bytes(pool: SharedFeatures, client: int,
                           remote_sample: Optional[int] = None) -> int:
    """Bytes of remote features ``client`` merges from ``pool``: every other client's rows,
    or at most ``remote_sample`` of them (``bank.sample_remote``; rows are all one size)."""
    others = [(f, p) for c, (f, p) in pool.items() if c != client]
    full = sum(f.nbytes + p.nbytes for f, p in others)
    rows = sum(len(p) for _, p in others)
    if remote_sample is None or rows <= remote_sample:
        return full
    return full // rows * remote_sample
