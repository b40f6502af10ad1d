"""The coordinator actor: transport and state around the federation's strategy.

Each round it broadcasts the global weights once (one ``ray.put``, the same reference to
every client), waits for the clients in parallel up to the round's deadline, and hands what
arrived to the phase's :class:`~fcl_ray.core.strategy.Strategy` (which clients a round asks
and with what config, which updates count, FedAvg, the feature pool, traffic, when federated
fine-tuning stops); it keeps the resulting state between rounds, writes the checkpoints and
returns a :class:`~fcl_ray.core.events.RoundReport` per round to the driver.

It only moves and averages NumPy vectors, so it imports neither torch nor MONAI (nor any
method's module): a lighter process that starts faster, on the cores the clients need at
start-up (tests/unit/test_architecture.py checks this).

Faults are values, not crashes: a client that died, failed, sent a bad message or missed the
deadline sits the round out and is recorded. Ray restarts a dead client actor (its
``max_restarts``); as soon as the death is seen the coordinator sets its phase up again and
the client restores its own last round checkpoint (:class:`Rejoins`), then rejoins from the
global weights (``federation.rejoin_wait_s``: how long a round waits for it). Fewer than
``federation.min_clients`` valid answers: the round is retried ``federation.round_retries``
times, then :class:`FederationError` stops the run with the last checkpoint intact.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Optional

import numpy as np
import ray
from ray.exceptions import RayActorError, RayTaskError

from fcl_ray.config_io import from_dict
from fcl_ray.federation.process_memory import peak_resident_mb
from fcl_ray.federation.checkpoint import (COORDINATOR_FILE, CheckpointError, CheckpointStore,
                                           checkpoint_root, client_file, coordinator_arrays,
                                           phase_name, restore_coordinator)
from fcl_ray.core.events import RoundReport
from fcl_ray.core.participation import generator_state, participant_generator
from fcl_ray.core.strategy import SharedFeatures, Strategy, make_strategy
from fcl_ray.protocol.messages import ALL_LABELED, ClientNotReady, ClientUpdate, phase_contract


def _queue_weight(n_labeled: int) -> float:
    """How early a local setting joins a client's queue: more labels, longer training."""
    return float("inf") if n_labeled == ALL_LABELED else n_labeled


class FederationError(RuntimeError):
    """The federation cannot go on (too few clients answered, the coordinator is gone)."""


class Rejoins:
    """Clients Ray restarted, rebuilt for the current phase without holding up a round.

    As soon as a client's death is seen it is sent the phase's set-up call again (Ray holds
    the call until the restarted process is up) with where its own last round checkpoint is,
    if the phase has one: the client restores its state from there right after the set-up
    (:meth:`~fcl_ray.federation.site.ClientSite.rejoin`) and rejoins at the first round
    after that has finished. A set-up that fails is sent again at once. ``checkpoint_of(cid)``
    says where a client's state is: (the phase's checkpoint folder, the round its state was
    saved in if known, "") or (None, None, why there is none)."""

    def __init__(self, clients: list, store_url: Optional[str],
                 checkpoint_of: Callable[[int], tuple[Optional[str], Optional[int], str]]):
        self.clients = clients
        self.store_url, self.checkpoint_of = store_url, checkpoint_of
        self.call, self.args = "", []     # the phase's set-up call, its arguments per client
        self.new_phase("", [])

    def new_phase(self, call: str, args: list[tuple]) -> None:
        self.call, self.args = call, args
        self.waiting: set[int] = set()    # restarted clients not rebuilt yet
        self.pending: dict[int, ray.ObjectRef] = {}
        self.errors: dict[int, str] = {}  # why a restarted client's last set-up failed
        self.died_at: dict[int, int] = {}   # the round in which each death was seen
        self.restoring: dict[int, tuple[Optional[int], str]] = {}   # (round, why none)
        self.back: dict[int, dict] = {}   # rebuilt, not reported yet: rounds missed, restored

    def died(self, cid: int, round_index: int) -> None:
        """``cid`` died (or was restarted) in round ``round_index``: rebuild it now."""
        if cid not in self.waiting:
            self.died_at[cid] = round_index
        self.waiting.add(cid)
        self.back.pop(cid, None)
        if cid not in self.pending:
            self._send(cid)

    def _send(self, cid: int) -> None:
        phase, saved_in, why = self.checkpoint_of(cid)
        self.restoring[cid] = (saved_in, why) if phase else (None, why or "no checkpoint")
        self.pending[cid] = self.clients[cid].rejoin.remote(
            self.call, self.args[cid], self.store_url if phase else None, phase)

    def _collect(self, round_index: int) -> None:
        """Take in the finished set-ups; a failed one is sent again at once."""
        if not self.pending:
            return
        done, _ = ray.wait(list(self.pending.values()), num_returns=len(self.pending), timeout=0)
        for cid, ref in list(self.pending.items()):
            if ref not in done:
                continue
            del self.pending[cid]
            try:
                answer = ray.get(ref)
            except (RayActorError, RayTaskError) as err:
                self.errors[cid] = str(err).strip().splitlines()[-1][:200]
                self._send(cid)
                continue
            self.waiting.discard(cid)
            self.errors.pop(cid, None)
            saved_in, why = self.restoring.pop(cid)
            restored = answer["restored"]
            self.back[cid] = {"rounds_missed": round_index - self.died_at.pop(cid),
                              # the round its state is from (a carried-forward file's is older
                              # than its folder's; after a --resume only the folder's is known)
                              "restored_round": (saved_in or answer["round"]) if restored else None,
                              **({} if restored else {"fresh_start": why or answer["why"]})}

    def poll(self, round_index: int, wait_s: float = 0.0, of: Iterable[int] = ()) -> dict[int, str]:
        """Before round ``round_index``: take in the rebuilt clients, waiting up to ``wait_s``
        seconds for those of ``of`` still being rebuilt; returns {id: why} for the clients
        not back yet."""
        deadline = time.monotonic() + wait_s
        self._collect(round_index)
        while self.waiting & set(of) and time.monotonic() < deadline:
            time.sleep(0.2)
            self._collect(round_index)
        return {cid: "rejoining after a restart" + self._plan(cid)
                + (f" (last try: {self.errors[cid]})" if cid in self.errors else "")
                for cid in self.waiting}

    def _plan(self, cid: int) -> str:
        saved_in, why = self.restoring.get(cid, (None, ""))
        return (f", fresh: {why}" if why else ", restoring its own state"
                + (f" of round {saved_in}" if saved_in else ""))

    def rejoined(self) -> dict[str, dict]:
        """The clients back since the last call: {id: {rounds_missed, restored_round, and
        fresh_start (why nothing was restored) when restored_round is None}}."""
        back, self.back = self.back, {}
        return {str(cid): entry for cid, entry in sorted(back.items())}

    def wait_for_all(self, round_index: int, timeout_s: float = 300.0) -> None:
        """Before a phase every client must take part in (final encoder, fine-tuning): wait
        until restarted clients are rebuilt; a client that cannot come back stops us."""
        self.poll(round_index, timeout_s, of=range(len(self.clients)))
        if self.waiting:
            raise FederationError(f"clients {sorted(self.waiting)} did not come back "
                                  f"within {timeout_s:.0f}s after dying")


class Coordinator:
    """Holds the federation's global state between rounds (wrapped with ``ray.remote``)."""

    def __init__(self, clients: list, cfg_dict: dict):
        self.cfg = from_dict(cfg_dict)
        self.clients = clients                         # ordered by client id
        fed = self.cfg.federation
        root = checkpoint_root(self.cfg)
        self.store = CheckpointStore(root) if fed.checkpoint_every else None
        self.rejoins = Rejoins(clients, self.store.url if self.store else None,
                               self._own_checkpoint)
        self.encoders: dict[str, list] = {}            # method -> per-client encoder refs
        # The current phase: its policy and the state it carries from round to round.
        self.phase = ""
        self.checkpointed = False     # whether the phase's client state is checkpointed
        # The round each client last saved its state in (a client that could not save has
        # its older file carried forward: the state it restores is from this round).
        self.saved_round: dict[int, int] = {}
        self.strategy: Optional[Strategy] = None
        self.global_weights: Optional[np.ndarray] = None
        self.shared: SharedFeatures = {}
        self.round_index = 0
        # Partial participation (federation.clients_per_round): draws each pre-training
        # round's clients; its state goes into the round checkpoint, so --resume continues it.
        self.participant_rng: Optional[np.random.Generator] = None

    def process_info(self) -> dict:
        """The coordinator process's peak resident memory (MB) and which of torch and MONAI
        it has loaded (none, by design), for ``fcl-ray bench``."""
        return {"peak_rss_mb": peak_resident_mb(),
                "heavy_modules": sorted({m.split(".")[0] for m in sys.modules}
                                        & {"torch", "monai"})}

    # ------------------------------------------------------------------ rounds
    def _start_phase(self, call: str, args: list[tuple], checkpointed: bool) -> list[dict]:
        """Run the set-up call on every client (``args[cid]`` its arguments), remember it to
        rebuild restarted clients (``checkpointed``: from their own round checkpoints), and
        start the phase's strategy from round 0. The clients' answers say what they will
        send, and whether their weights are averaged."""
        self.rejoins.new_phase(call, args)
        self.checkpointed, self.saved_round = checkpointed, {}
        infos = ray.get([getattr(c, call).remote(*a) for c, a in zip(self.clients, args)])
        federated = infos[0]["federated"]
        contract = phase_contract(infos[0], self.cfg.data.partitions,
                                  self.cfg.pretrain.exchange_size)
        self.strategy = make_strategy(self.cfg.federation, contract, federated)
        self.global_weights, self.shared, self.round_index = None, {}, 0
        return infos

    def _collect(self, call: str, sampled: list[int],
                 *args) -> tuple[list[ClientUpdate], dict[int, str]]:
        """One attempt: call every available client of ``sampled``, keep the valid, timely
        updates. Clients not sampled get no call at all."""
        fed = self.cfg.federation
        timeout = fed.round_timeout_s
        rejoining = self.rejoins.poll(self.round_index, fed.rejoin_wait_s, of=sampled)
        dropped = {cid: why for cid, why in rejoining.items() if cid in sampled}
        weights_ref = ray.put(self.global_weights) if self.global_weights is not None else None
        refs = {getattr(self.clients[cid], call).remote(weights_ref, *args): cid
                for cid in sampled if cid not in dropped}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        answers = {}
        for ref in ready:
            cid = refs[ref]
            try:
                answers[cid] = ray.get(ref)
            except RayActorError:
                dropped[cid] = "died"
                self.rejoins.died(cid, self.round_index)
            except RayTaskError as err:
                if isinstance(err.cause, ClientNotReady):   # died between rounds, restarted
                    dropped[cid] = "died"
                    self.rejoins.died(cid, self.round_index)
                    continue
                dropped[cid] = f"failed: {str(err.cause).splitlines()[0][:200]}"
        updates, rejected = self.strategy.select(answers)
        dropped.update(rejected)
        for ref in late:
            dropped[refs[ref]] = f"late (deadline {timeout}s)"
        return updates, dropped

    def _round(self, call: str, *args, rng: Optional[np.random.Generator] = None
               ) -> tuple[list[ClientUpdate], RoundReport]:
        """The strategy configures the round (its clients: all, or a sample drawn from
        ``rng``; their config, sent after ``args``); collect from them, retrying the same
        ones when fewer than ``min_clients`` answered, and aggregate. Returns the updates
        that counted and the round's report."""
        fed = self.cfg.federation
        self.round_index += 1
        plan = self.strategy.configure_round(self.round_index, len(self.clients),
                                             fed.clients_per_round, rng)
        sampled = plan.clients
        attempts = []
        for _ in range(fed.round_retries + 1):
            updates, dropped = self._collect(call, sampled, *args, plan.config)
            attempts.append(dropped)
            if self.strategy.enough(updates):
                break
        else:
            raise FederationError(
                f"round {self.round_index}: only {len(updates)} of {len(sampled)} "
                f"{'sampled ' if len(sampled) < len(self.clients) else ''}clients answered "
                f"(federation.min_clients={fed.min_clients}) in {len(attempts)} "
                f"attempt(s); dropped: {dropped}")
        start = time.perf_counter()
        self.global_weights = self.strategy.aggregate_updates(updates, self.global_weights)
        return updates, RoundReport(
            round=self.round_index, sampled=sampled, participants=[u.client for u in updates],
            dropped={str(k): v for k, v in dropped.items()}, retries=len(attempts) - 1,
            # Who was left out of each attempt that had to be retried (a late straggler
            # there may answer the retry): else lost from the record.
            dropped_retried=[{str(k): v for k, v in d.items()} for d in attempts[:-1]],
            aggregate_seconds=time.perf_counter() - start,
            clients=[{"client": u.client, **u.metrics} for u in updates],
            rejoined=self.rejoins.rejoined())

    @staticmethod
    def _finished(report: RoundReport, start: float) -> RoundReport:
        """The report as the driver gets it: with the round's wall time."""
        report.round_seconds = time.perf_counter() - start
        return report

    # ------------------------------------------------------------------ pre-training
    def start_pretraining(self, method: str, fold: int, resume: bool = False) -> dict:
        """Set every client up for ``method``; with ``resume``, continue from the last
        complete checkpoint of this phase. Returns sizes and the round to start from."""
        self.phase = phase_name(method, fold)
        infos = self._start_phase("start_pretraining", [(method, fold)] * len(self.clients),
                                  checkpointed=True)
        self.participant_rng = participant_generator(self.cfg.experiment.seed, fold)
        start_round = 0
        if resume and self.store is not None:
            start_round = self._restore() or 0
        return {"slices": sum(i["slices"] for i in infos), "start_round": start_round,
                # privacy.*: each site's round release, for the driver's accountant
                "privacy": {cid: i["privacy"] for cid, i in enumerate(infos)
                            if i.get("privacy") is not None}}

    def pretrain_round(self) -> RoundReport:
        """One round of pre-training: the round's sampled clients (all, unless
        ``federation.clients_per_round``) get the global weights and the pool of features
        shared last round; FedAvg and the new pool are over this round's participants."""
        start = time.perf_counter()
        shared_ref = ray.put(self.shared) if self.shared else None
        updates, report = self._round("pretrain_round", shared_ref, self.round_index + 1,
                                      rng=self.participant_rng)
        # Received: the pool this round's clients read (last round's), before it is replaced.
        report.traffic = self.strategy.traffic(updates, self.global_weights, self.shared,
                                               self.cfg.pretrain.remote_sample)
        self.shared = self.strategy.aggregate_feature_pool(updates)
        self._checkpoint()
        # A set-up sent the moment a death was seen can fail (Ray had not begun the restart
        # yet): send it again now, not at the next round's start.
        self.rejoins.poll(self.round_index + 1)
        return self._finished(report, start)

    def _checkpoint(self) -> None:
        """Every ``checkpoint_every`` rounds: clients save their own state, then the
        coordinator its state, then the round is published as complete."""
        every = self.cfg.federation.checkpoint_every
        if self.store is None or self.round_index % every:
            return
        path = self.store.round_dir(self.phase, self.round_index)
        saves = {cid: self.clients[cid].save_state.remote(self.store.url, path)
                 for cid in range(len(self.clients)) if cid not in self.rejoins.waiting}
        saved = set()
        for cid, save in saves.items():
            try:
                ray.get(save)
                saved.add(cid)
                self.saved_round[cid] = self.round_index
            except RayTaskError as err:   # a save that fails would make resuming inexact
                if isinstance(err.cause, ClientNotReady):   # restarted since the round: it
                    self.rejoins.died(cid, self.round_index)   # has nothing to save
                    continue
                raise FederationError(f"checkpoint of round {self.round_index} failed: "
                                      f"{str(err.cause).splitlines()[0]}") from None
            except RayActorError:         # died since the round: rebuild it
                self.rejoins.died(cid, self.round_index)
        # A client that could not save (dead, being rebuilt) keeps its last saved state in
        # this round too: what it restores when it is rebuilt, or on --resume.
        previous = self._latest()
        for cid in sorted(set(range(len(self.clients))) - saved):
            if previous is not None:
                self.store.carry_forward(
                    f"{self.store.round_dir(self.phase, previous)}/{client_file(cid)}",
                    f"{path}/{client_file(cid)}")
        self.store.save_arrays(f"{path}/{COORDINATOR_FILE}",
                               coordinator_arrays(self.round_index, self.global_weights, self.shared,
                                                  generator_state(self.participant_rng)))
        self.store.mark_complete(self.phase, self.round_index)

    def _latest(self) -> Optional[int]:
        """The phase's last complete round checkpoint; None if none (or an unreadable
        pointer: the resume refuses that one, a live run just has nothing to restore)."""
        try:
            return self.store.latest(self.phase)
        except CheckpointError:
            return None

    def _own_checkpoint(self, cid: int) -> tuple[Optional[str], Optional[int], str]:
        """Whether client ``cid`` has its own state of the phase to restore: (the phase,
        the round the state was saved in or None if unknown (after a --resume), ""), or
        (None, None, why not). The client reads the newest round itself, when it is up."""
        if not self.checkpointed:
            return None, None, "this phase's client state is not checkpointed"
        if self.store is None:
            return None, None, "checkpoints are off (federation.checkpoint_every=0)"
        last = self._latest()
        if last is None:
            return None, None, "no checkpoint yet"
        if not self.store.fs.exists(f"{self.store.round_dir(self.phase, last)}/"
                                    f"{client_file(cid)}"):
            return None, None, f"the round-{last} checkpoint holds no state of it"
        return self.phase, self.saved_round.get(cid), ""

    def _restore(self) -> Optional[int]:
        restored = restore_coordinator(self.store, self.phase, self.participant_rng)
        if restored is None:
            return None
        self.round_index, self.global_weights, self.shared, path = restored
        try:
            ray.get([c.load_state.remote(self.store.url, path) for c in self.clients])
        except RayTaskError as err:   # a client's file refused: the same one line
            if isinstance(err.cause, CheckpointError):
                raise CheckpointError(str(err.cause)) from None
            raise
        return self.round_index

    def probe(self, fold: int, n_labeled: int) -> float:
        """Mean over clients of the probe Dice of the current global encoder."""
        weights_ref = ray.put(self.global_weights) if self.strategy.federated else None
        return self._mean_over_clients("probe", weights_ref, fold, n_labeled)

    def _mean_over_clients(self, call: str, *args) -> float:
        """``call`` on every client that is not rejoining; the mean of the Dice they return
        (a number, or a dict's ``dice_mean``), leaving out clients that fail."""
        calls = [getattr(c, call).remote(*args)
                 for cid, c in enumerate(self.clients) if cid not in self.rejoins.waiting]
        scores = []
        for ref in calls:
            try:
                answer = ray.get(ref)
            except (RayActorError, RayTaskError):
                continue
            scores.append(answer["dice_mean"] if isinstance(answer, dict) else answer)
        return float(np.nanmean(scores)) if scores else float("nan")

    def finish_pretraining(self, method: str) -> None:
        self.rejoins.wait_for_all(self.round_index + 1)
        weights_ref = ray.put(self.global_weights) if self.strategy.federated else None
        calls = [c.finish_pretraining.remote(weights_ref) for c in self.clients]
        ray.wait(calls, num_returns=len(calls))        # every client has released its method
        # Federated: every client now holds the same global encoder, so keep one copy.
        self.encoders[method] = [calls[0]] * len(calls) if self.strategy.federated else calls
        self.global_weights, self.shared = None, {}

    def encoder_states(self, method: str) -> list[dict]:
        """The final encoders of ``method`` (one per client; the same one if federated)."""
        refs = self.encoders[method]
        shared = all(ref is refs[0] for ref in refs)   # federated: one reference for all
        return ray.get(refs[:1] if shared else refs)

    # ------------------------------------------------------------------ frozen-encoder probes
    def probe_encoder(self, method: str, fold: int, n_labeled: int, steps: int) -> dict:
        """Gather what the probes of ``method``'s encoder need: every client embeds its own
        slices with each distinct encoder of the method (one if pre-training was federated,
        each client's own if local, random init for a method without one) and returns
        features and labels, never images; every client runs the segmentation probe on its
        own data with its own encoder. Returns ``features`` (per distinct encoder, per
        client), ``encoder_of`` (per client, the index of its encoder) and ``segmentation``
        (per client, Dice). The cross-site probes themselves need torch: the driver runs them."""
        encoders = self._encoders(method)
        distinct: list = []
        encoder_of = []
        for encoder in encoders:    # by identity: a federated encoder is one reference
            if not any(encoder is seen for seen in distinct):
                distinct.append(encoder)
            encoder_of.append(next(i for i, seen in enumerate(distinct) if encoder is seen))
        features = [[c.probe_features.remote(e, fold) for c in self.clients] for e in distinct]
        segmentation = [c.segmentation_probe.remote(e, fold, n_labeled, steps)
                        for c, e in zip(self.clients, encoders)]
        return {"features": [ray.get(refs) for refs in features], "encoder_of": encoder_of,
                "segmentation": ray.get(segmentation)}

    # ------------------------------------------------------------------ fine-tuning
    def use_encoder(self, name: str, state: dict) -> None:
        """Fine-tune rows ``name`` from a given encoder (``finetune.encoder``): every client
        starts from it, as after federated pre-training."""
        self.encoders[name] = [ray.put(state)] * len(self.clients)

    def _encoders(self, method: str) -> list:
        return self.encoders.get(method, [None] * len(self.clients))

    def submit_local_settings(self, fold: int,
                              settings: list[tuple[str, int]]) -> list[list[ray.ObjectRef]]:
        """Every local fine-tune of a fold, (encoder, N) for every client, submitted at once:
        each client actor works through its own queue without waiting for the others or for
        the driver, so the cores stay busy until the last settings finish. The queue starts
        with the largest label budgets (the upper bound first): longest first leaves the
        shortest tail. Returns the calls' references per setting, by client, in the order
        given: the driver waits on them and reports each setting as it finishes."""
        order = sorted(range(len(settings)), key=lambda i: -_queue_weight(settings[i][1]))
        calls: dict[int, list] = {}
        for i in order:
            encoder, n = settings[i]
            calls[i] = [c.finetune_local.remote(e, fold, n)
                        for c, e in zip(self.clients, self._encoders(encoder))]
        return [calls[i] for i in range(len(settings))]

    def start_federated_finetune(self, method: str, fold: int, n_labeled: int) -> None:
        """Every client builds its U-Net from its own encoder (the same one unless
        pre-training was local) and the same seeded decoder."""
        self._start_phase("start_federated_finetune",
                          [(e, fold, n_labeled) for e in self._encoders(method)],
                          checkpointed=False)   # fine-tuning rounds save no client state

    def finetune_round(self) -> RoundReport:
        """One round of supervised fine-tuning (all clients); its timing and traffic."""
        start = time.perf_counter()
        updates, report = self._round("finetune_round")
        report.traffic = self.strategy.traffic(updates, self.global_weights)
        return self._finished(report, start)

    def finish_federated_finetune(self, fold: int, n_labeled: int = 0,
                                  outcome: Optional[dict] = None) -> list[dict]:
        """Dice of the final global U-Net on every client's test fold; ``outcome`` (steps
        run, validation Dice) is added to every client's row."""
        weights_ref = ray.put(self.global_weights)
        self.rejoins.wait_for_all(self.round_index + 1)
        results = ray.get([c.finish_federated_finetune.remote(weights_ref, fold, n_labeled)
                           for c in self.clients])
        self.global_weights = None
        return [{**r, **(outcome or {})} for r in results]

    def validation_dice(self, fold: int) -> float:
        """Mean over clients of the current global U-Net's validation Dice (clients that
        fail or are rejoining are left out of this evaluation)."""
        return self._mean_over_clients("validate_global", ray.put(self.global_weights), fold)

    def finetune_federated(self, method: str, fold: int, n_labeled: int, rounds: int) -> list[dict]:
        """One federated fine-tuning setting, its rounds run by the strategy
        (:meth:`~fcl_ray.core.strategy.Strategy.run_finetune`): ``rounds`` rounds
        (``budget=steps``), or until the global model's mean validation Dice stops improving
        (``converge``; the best global weights are the ones scored on the test folds)."""
        self.start_federated_finetune(method, fold, n_labeled)
        best, outcome = self.strategy.run_finetune(self.cfg.finetune, rounds, self.finetune_round,
                                                   lambda: self.validation_dice(fold),
                                                   lambda: self.global_weights)
        if best is not None:
            self.global_weights = best
        return self.finish_federated_finetune(fold, n_labeled, outcome)
