"""The federation's policy, free of Ray: which client updates count, how they are combined,
what is pooled for the next round, and what a round costs in bytes.

The :class:`~fcl_ray.federation.coordinator.Coordinator` moves the messages (Ray calls,
deadlines, restarts, checkpoints) and keeps the state between rounds; every decision it makes
about the messages themselves is here, so it can be tested with plain ``ClientUpdate``\\ s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from fcl_ray.methods.aggregation import fedavg
from fcl_ray.methods.messages import ClientUpdate, Contract, MessageError, check_update

SharedFeatures = dict[int, tuple[np.ndarray, np.ndarray]]   # client -> (features, partitions)


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
                pooled_features: bool = False) -> dict:
        """Bytes a round moved, per client and in total.

        Weights: up, each client's vector; down, the global vector (when federated). With
        ``pooled_features``: up, each client's features; down, everyone else's."""
        down = global_weights.nbytes if self.federated else 0
        stats = {"bytes_per_client": {str(u.client): u.nbytes_weights + down + u.nbytes_features
                                      for u in updates},
                 "bytes_weights": sum(u.nbytes_weights + down for u in updates)}
        if pooled_features:
            sent = {u.client: u.nbytes_features for u in updates}
            total = sum(sent.values())
            stats["bytes_features"] = total + sum(total - own for own in sent.values())
            for client, own in sent.items():
                stats["bytes_per_client"][str(client)] += total - own
        return stats
