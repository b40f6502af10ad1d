"""The coordinator actor: global weights, FedAvg, the exchanged feature banks, checkpoints.

Each round it broadcasts the global weights once (one ``ray.put``, the same reference to
every client), waits for the clients in parallel up to the round's deadline, checks every
update against the message contract, aggregates the valid ones in client-id order, and
returns small per-round metrics to the driver.

Faults are values, not crashes: a client that died, failed, sent a bad message or missed the
deadline sits the round out and is recorded. Ray restarts a dead client actor (its
``max_restarts``); before the next round the coordinator sets its method up again, and it
continues from the global weights. Fewer than ``federation.min_clients`` answers: the round
is retried ``federation.round_retries`` times, then :class:`FederationError` stops the run
with the last checkpoint intact.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from fcl_ray.methods.aggregation import fedavg
from fcl_ray.config import from_dict
from fcl_ray.federation.checkpoint import CheckpointStore
from fcl_ray.methods.messages import ClientUpdate, Contract, MessageError, check_update
from fcl_ray.methods import get_method_class


class FederationError(RuntimeError):
    """The federation cannot go on (too few clients answered, the coordinator is gone)."""


class Coordinator:
    """Holds the federation's global state between rounds (wrapped with ``ray.remote``)."""

    def __init__(self, clients: list, cfg_dict: dict):
        self.cfg = from_dict(cfg_dict)
        self.clients = clients                         # ordered by client id
        fed = self.cfg.federation
        root = fed.checkpoint_dir or f"{self.cfg.experiment.output_dir}/checkpoints"
        self.store_root = root
        self.store = CheckpointStore(root) if fed.checkpoint_every else None
        self.global_weights: Optional[np.ndarray] = None
        self.shared: dict[int, tuple] = {}
        self.encoders: dict[str, list] = {}            # method -> per-client encoder refs
        self.federated = True
        self.contract: Optional[Contract] = None
        self.setup: tuple = ()                         # (call, args) that (re)builds a client
        self.needs_setup: set[int] = set()             # restarted clients to build again
        self.pending_setup: dict[int, ray.ObjectRef] = {}
        self.rejoin_errors: dict[int, str] = {}         # why a restarted client's set-up failed
        self.round_index = 0
        self.phase = ""

    # ------------------------------------------------------------------ rounds
    def _start_phase(self, call: str, *args) -> list[dict]:
        """Run the set-up call on every client; remember it to rebuild restarted clients."""
        self.setup = (call, args)
        self.needs_setup, self.pending_setup = set(), {}
        infos = ray.get([getattr(c, call).remote(*args) for c in self.clients])
        self.contract = Contract(n_weights=infos[0]["n_weights"],
                                 feature_dim=infos[0]["feature_dim"],
                                 partitions=self.cfg.data.partitions,
                                 max_features=self.cfg.pretrain.exchange_size)
        self.global_weights, self.shared, self.round_index = None, {}, 0
        return infos

    def _rejoin(self) -> dict[int, str]:
        """Rebuild restarted clients without holding up the round: the set-up call is sent,
        and a client rejoins at the first round after it has finished. Returns {id: why}
        for the clients not back yet."""
        call, args = self.setup
        for cid in self.needs_setup - set(self.pending_setup):
            self.pending_setup[cid] = getattr(self.clients[cid], call).remote(*args)
        done, _ = ray.wait(list(self.pending_setup.values()),
                           num_returns=len(self.pending_setup), timeout=0)
        for cid, ref in list(self.pending_setup.items()):
            if ref in done:
                del self.pending_setup[cid]
                try:
                    ray.get(ref)
                    self.needs_setup.discard(cid)
                    self.rejoin_errors.pop(cid, None)
                except (RayActorError, RayTaskError) as err:   # sent again next round
                    self.rejoin_errors[cid] = str(err).strip().splitlines()[-1][:200]
        return {cid: "rejoining after a restart" + (f" (last try: {self.rejoin_errors[cid]})"
                                                    if cid in self.rejoin_errors else "")
                for cid in self.needs_setup}

    def _wait_for_all(self, timeout_s: float = 300.0) -> None:
        """Before a phase every client must take part in (final encoder, fine-tuning):
        wait until restarted clients are rebuilt; a client that cannot come back stops us."""
        deadline = time.monotonic() + timeout_s
        while self.needs_setup and time.monotonic() < deadline:
            self._rejoin()
            time.sleep(0.5)
        if self.needs_setup:
            raise FederationError(f"clients {sorted(self.needs_setup)} did not come back "
                                  f"within {timeout_s:.0f}s after dying")

    def _collect(self, call: str, *args) -> tuple[list[ClientUpdate], dict[int, str]]:
        """One attempt: call every available client, keep the valid, timely updates."""
        fed = self.cfg.federation
        unavailable = self._rejoin()
        weights_ref = ray.put(self.global_weights) if self.global_weights is not None else None
        refs = {getattr(c, call).remote(weights_ref, *args): cid
                for cid, c in enumerate(self.clients) if cid not in unavailable}
        dropped = dict(unavailable)
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=fed.round_timeout_s)
        updates = []
        for ref in ready:
            cid = refs[ref]
            try:
                updates.append(check_update(ray.get(ref), self.contract))
            except RayActorError:
                dropped[cid] = "died"
                self.needs_setup.add(cid)
            except RayTaskError as err:
                dropped[cid] = f"failed: {str(err.cause).splitlines()[0][:200]}"
            except MessageError as err:
                dropped[cid] = f"rejected: {err}"
        for ref in late:
            dropped[refs[ref]] = f"late (deadline {fed.round_timeout_s}s)"
        updates.sort(key=lambda u: u.client)           # aggregation order = client id
        return updates, dropped

    def _round(self, call: str, *args) -> tuple[list[ClientUpdate], dict]:
        """Collect (retrying when too few answered), then FedAvg; return updates and stats."""
        fed = self.cfg.federation
        self.round_index += 1
        attempts = []
        for _ in range(fed.round_retries + 1):
            updates, dropped = self._collect(call, *args)
            attempts.append(dropped)
            if len(updates) >= fed.min_clients:
                break
        else:
            raise FederationError(
                f"round {self.round_index}: only {len(updates)} of {len(self.clients)} clients "
                f"answered (federation.min_clients={fed.min_clients}) in {len(attempts)} "
                f"attempt(s); dropped: {dropped}")
        start = time.perf_counter()
        if self.federated:
            self.global_weights = fedavg([u.weights for u in updates],
                                         [u.n_samples for u in updates])
        down = self.global_weights.nbytes if self.federated else 0
        stats = {"round": self.round_index,
                 "participants": [u.client for u in updates],
                 "dropped": {str(k): v for k, v in dropped.items()},
                 "retries": len(attempts) - 1,
                 "aggregate_seconds": time.perf_counter() - start,
                 "bytes_per_client": {str(u.client): u.nbytes_weights + down + u.nbytes_features
                                      for u in updates},
                 "bytes_weights": sum(u.nbytes_weights + down for u in updates)}
        return updates, stats

    # ------------------------------------------------------------------ pre-training
    def start_pretraining(self, method: str, fold: int, resume: bool = False) -> dict:
        """Set every client up for ``method``; with ``resume``, continue from the last
        complete checkpoint of this phase. Returns sizes and the round to start from."""
        self.federated = get_method_class(method).federated
        self.phase = f"{method}-fold{fold}"
        infos = self._start_phase("start_pretraining", method, fold)
        start_round = 0
        if resume and self.store is not None:
            start_round = self._restore() or 0
        return {"slices": sum(i["slices"] for i in infos), "start_round": start_round}

    def pretrain_round(self) -> dict:
        start = time.perf_counter()
        shared_ref = ray.put(self.shared) if self.shared else None
        updates, stats = self._round("pretrain_round", shared_ref)
        self.shared = {u.client: (u.features, u.partitions) for u in updates
                       if u.features is not None}
        # Up: what each client sent. Down: every client receives the others' features.
        sent = {u.client: u.nbytes_features for u in updates}
        total = sum(sent.values())
        stats["bytes_features"] = total + sum(total - own for own in sent.values())
        for u in updates:
            stats["bytes_per_client"][str(u.client)] += total - sent[u.client]
        self._checkpoint()
        stats["round_seconds"] = time.perf_counter() - start
        return {"clients": [{"client": u.client, **u.metrics} for u in updates], **stats}

    def _checkpoint(self) -> None:
        """Every ``checkpoint_every`` rounds: clients save their own state, then the
        coordinator its state, then the round is published as complete."""
        every = self.cfg.federation.checkpoint_every
        if self.store is None or self.round_index % every:
            return
        path = self.store.round_dir(self.phase, self.round_index)
        saves = [self.clients[cid].save_state.remote(self.store_root, path)
                 for cid in range(len(self.clients)) if cid not in self.needs_setup]
        for save in saves:
            try:
                ray.get(save)
            except RayTaskError as err:   # a save that fails would make resuming inexact
                raise FederationError(f"checkpoint of round {self.round_index} failed: "
                                      f"{str(err.cause).splitlines()[0]}") from None
            except RayActorError:         # died since the round: it restarts from the
                pass                      # global weights, in this run as after a resume
        self.store.save(f"{path}/coordinator.pt",
                        {"round": self.round_index, "global_weights": self.global_weights,
                         "shared": self.shared})
        self.store.mark_complete(self.phase, self.round_index)

    def _restore(self) -> Optional[int]:
        last = self.store.latest(self.phase)
        if last is None:
            return None
        path = self.store.round_dir(self.phase, last)
        state = self.store.load(f"{path}/coordinator.pt")
        self.global_weights, self.shared = state["global_weights"], state["shared"]
        self.round_index = state["round"]
        ray.get([c.load_state.remote(self.store_root, path) for c in self.clients])
        return last

    def probe(self, fold: int, n_labeled: int) -> float:
        """Mean over clients of the probe Dice of the current global encoder."""
        weights_ref = ray.put(self.global_weights) if self.federated else None
        calls = [c.probe.remote(weights_ref, fold, n_labeled)
                 for cid, c in enumerate(self.clients) if cid not in self.needs_setup]
        results = []
        for call in calls:
            try:
                results.append(ray.get(call)["dice_mean"])
            except (RayActorError, RayTaskError):
                continue
        return float(np.nanmean(results)) if results else float("nan")

    def finish_pretraining(self, method: str) -> None:
        self._wait_for_all()
        weights_ref = ray.put(self.global_weights) if self.federated else None
        calls = [c.finish_pretraining.remote(weights_ref) for c in self.clients]
        ray.wait(calls, num_returns=len(calls))        # every client has released its method
        # Federated: every client now holds the same global encoder, so keep one copy.
        self.encoders[method] = [calls[0]] * len(calls) if self.federated else calls
        self.global_weights, self.shared = None, {}

    def encoder_states(self, method: str) -> list[dict]:
        """The final encoders of ``method`` (one per client; the same one if federated)."""
        return ray.get(self.encoders[method][:1] if self.federated else self.encoders[method])

    # ------------------------------------------------------------------ fine-tuning
    def use_encoder(self, name: str, state: dict) -> None:
        """Fine-tune rows ``name`` from a given encoder (``finetune.encoder``): every client
        starts from it, as after federated pre-training."""
        self.encoders[name] = [ray.put(state)] * len(self.clients)

    def _encoders(self, method: str) -> list:
        return self.encoders.get(method, [None] * len(self.clients))

    def finetune_local_grid(self, method: str, fold: int, budgets: list[int]) -> list[list[dict]]:
        """Every (N, client) local fine-tune submitted at once; results per N, by client."""
        encoders = self._encoders(method)
        calls = [[c.finetune_local.remote(e, fold, n) for c, e in zip(self.clients, encoders)]
                 for n in budgets]
        return [ray.get(per_n) for per_n in calls]

    def start_federated_finetune(self, method: str, fold: int, n_labeled: int) -> None:
        """Every client builds its U-Net (its encoder, the same seeded decoder)."""
        self.federated = True
        encoders = self._encoders(method)
        # Each client starts from its own encoder (the same one unless pre-training was local).
        self.setup = ("start_federated_finetune", (encoders[0], fold, n_labeled))
        self.needs_setup, self.pending_setup = set(), {}
        infos = ray.get([c.start_federated_finetune.remote(e, fold, n_labeled)
                         for c, e in zip(self.clients, encoders)])
        self.contract = Contract(n_weights=infos[0]["n_weights"], feature_dim=None,
                                 partitions=self.cfg.data.partitions, max_features=0)
        self.global_weights, self.round_index = None, 0

    def finetune_round(self) -> dict:
        """One FedAvg round of supervised fine-tuning; returns its timing and traffic."""
        start = time.perf_counter()
        updates, stats = self._round("finetune_round")
        stats["round_seconds"] = time.perf_counter() - start
        return {"clients": [{"client": u.client, **u.metrics} for u in updates], **stats}

    def finish_federated_finetune(self, fold: int, n_labeled: int = 0) -> list[dict]:
        """Dice of the final global U-Net on every client's test fold."""
        weights_ref = ray.put(self.global_weights)
        self._wait_for_all()
        results = ray.get([c.finish_federated_finetune.remote(weights_ref, fold, n_labeled)
                           for c in self.clients])
        self.global_weights = None
        return results

    def finetune_federated(self, method: str, fold: int, n_labeled: int, rounds: int) -> list[dict]:
        self.start_federated_finetune(method, fold, n_labeled)
        for _ in range(rounds):
            self.finetune_round()
        return self.finish_federated_finetune(fold, n_labeled)
