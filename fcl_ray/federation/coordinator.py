"""The coordinator actor: global weights, FedAvg, and the exchanged feature banks.

It drives the clients of one round in parallel (one ``ray.put`` per broadcast, the same
reference to every client), aggregates in a fixed client order, and returns only small
per-round metrics to the driver.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import ray

from fcl_ray.aggregation import fedavg
from fcl_ray.methods import get_method_class


def _nbytes(obj) -> int:
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_nbytes(o) for o in obj.values())
    return 0


class Coordinator:
    """Holds the federation's global state between rounds (wrapped with ``ray.remote``)."""

    def __init__(self, clients: list):
        self.clients = clients                         # ordered by client id
        self.global_weights: Optional[np.ndarray] = None
        self.shared: dict[int, tuple] = {}
        self.encoders: dict[str, list] = {}            # method -> per-client encoder refs
        self.federated = True

    def _round(self, call: str, *args) -> tuple[list[dict], dict]:
        """Broadcast the global weights once, run ``call`` on every client, FedAvg."""
        weights_ref = ray.put(self.global_weights) if self.global_weights is not None else None
        results = ray.get([getattr(c, call).remote(weights_ref, *args) for c in self.clients])
        results.sort(key=lambda r: r["client"])        # aggregation order = client id
        start = time.perf_counter()
        if self.federated:
            self.global_weights = fedavg([r["weights"] for r in results],
                                         [r["n_samples"] for r in results])
        stats = {"aggregate_seconds": time.perf_counter() - start,
                 "bytes_weights": sum(_nbytes(r["weights"]) for r in results)
                 + (_nbytes(self.global_weights) * len(results) if self.federated else 0)}
        return results, stats

    # ------------------------------------------------------------------ pre-training
    def start_pretraining(self, method: str, fold: int) -> list[int]:
        self.federated = get_method_class(method).federated
        self.global_weights, self.shared = None, {}
        return ray.get([c.start_pretraining.remote(method, fold) for c in self.clients])

    def pretrain_round(self) -> dict:
        start = time.perf_counter()
        shared_ref = ray.put(self.shared) if self.shared else None
        results, stats = self._round("pretrain_round", shared_ref)
        self.shared = {r["client"]: r["features"] for r in results if r["features"] is not None}
        features_up = sum(_nbytes(f) for f in self.shared.values())
        # Each client receives the others' features: (C - 1) x what one client sent.
        stats["bytes_features"] = features_up * max(len(self.clients) - 1, 1)
        stats["round_seconds"] = time.perf_counter() - start
        return {"clients": [{"client": r["client"], **r["metrics"]} for r in results], **stats}

    def probe(self, fold: int, n_labeled: int) -> float:
        """Mean over clients of the probe Dice of the current global encoder."""
        weights_ref = ray.put(self.global_weights) if self.federated else None
        results = ray.get([c.probe.remote(weights_ref, fold, n_labeled) for c in self.clients])
        return float(np.nanmean([r["dice_mean"] for r in results]))

    def finish_pretraining(self, method: str) -> None:
        weights_ref = ray.put(self.global_weights) if self.federated else None
        calls = [c.finish_pretraining.remote(weights_ref) for c in self.clients]
        ray.wait(calls, num_returns=len(calls))        # every client has released its method
        # Federated: every client now holds the same global encoder, so keep one copy.
        self.encoders[method] = [calls[0]] * len(calls) if self.federated else calls
        self.global_weights, self.shared = None, {}

    # ------------------------------------------------------------------ fine-tuning
    def _encoders(self, method: str) -> list:
        return self.encoders.get(method, [None] * len(self.clients))

    def finetune_local_grid(self, method: str, fold: int, budgets: list[int]) -> list[list[dict]]:
        """Every (N, client) local fine-tune submitted at once; results per N, by client."""
        encoders = self._encoders(method)
        calls = [[c.finetune_local.remote(e, fold, n) for c, e in zip(self.clients, encoders)]
                 for n in budgets]
        return [ray.get(per_n) for per_n in calls]

    def finetune_federated(self, method: str, fold: int, n_labeled: int, rounds: int) -> list[dict]:
        self.federated = True
        self.global_weights = None
        ray.get([c.start_federated_finetune.remote(e, fold, n_labeled)
                 for c, e in zip(self.clients, self._encoders(method))])
        for _ in range(rounds):
            self._round("finetune_round")
        weights_ref = ray.put(self.global_weights)
        results = ray.get([c.finish_federated_finetune.remote(weights_ref, fold)
                           for c in self.clients])
        self.global_weights = None
        return results
