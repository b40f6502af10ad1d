"""The federation's strategy, free of any runtime: it owns a round in both phases.

A :class:`Strategy` decides, for one phase (pre-training a method, or federated
fine-tuning): which clients a round asks and what scalar config each gets
(:meth:`~Strategy.configure_round`), which answers count (:meth:`~Strategy.select`), the new
global weights (:meth:`~Strategy.aggregate_updates`), the feature pool the next round
broadcasts (:meth:`~Strategy.aggregate_feature_pool`), what the round cost in bytes, and,
in federated fine-tuning, when to stop (:meth:`~Strategy.should_stop`,
:meth:`~Strategy.run_finetune`).

A runtime (:class:`~fcl_ray.federation.coordinator.Coordinator` on Ray) moves the messages
(calls, deadlines, restarts, checkpoints) and keeps the state between rounds; it asks the
strategy every question about the messages, so the policy is tested with plain
``ClientUpdate``\\ s. FedAvg is :class:`Strategy` itself; :class:`FedProx` shows what a new
strategy touches (``docs/extending-strategies.md``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Optional, Union

import numpy as np

from fcl_ray.config import FederationConfig, FinetuneConfig
from fcl_ray.core.early_stopping import EarlyStopping, evaluation_steps
from fcl_ray.core.events import Traffic
from fcl_ray.core.participation import sample_participants
from fcl_ray.protocol.aggregation import fedavg
from fcl_ray.protocol.messages import ClientUpdate, Contract, MessageError, check_update

SharedFeatures = dict[int, tuple[np.ndarray, np.ndarray]]   # client -> (features, partitions)
RoundConfig = dict[str, Union[int, float, str, bool]]        # scalars every client of a round gets


@dataclass(frozen=True)
class RoundPlan:
    """What a round asks: its 1-based index, the clients it calls (sorted) and the config
    every one of them gets with the global weights ({} for FedAvg: nothing extra)."""
    round: int
    clients: list[int]
    config: RoundConfig = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    """FedAvg over the valid updates of a round, for one phase (pre-training a method, or
    federated fine-tuning). Subclasses change a step and keep the rest."""

    contract: Contract        # what a valid update looks like in this phase
    federated: bool = True    # False: weights stay at each client (e.g. Local CL), no FedAvg
    min_clients: int = 1      # fewer valid updates than this: the round is retried
    name: ClassVar[str] = "fedavg"   # its federation.strategy value

    @classmethod
    def from_config(cls, fed: FederationConfig, contract: Contract,
                    federated: bool) -> "Strategy":
        """This strategy for a phase, with its options from ``federation.*``."""
        return cls(contract, federated, fed.min_clients)

    # ------------------------------------------------------------------ a round
    def round_config(self) -> RoundConfig:
        """The scalars every client gets with a round (none for FedAvg)."""
        return {}

    def configure_round(self, round_index: int, clients: int,
                        clients_per_round: Union[int, float, None] = None,
                        rng: Optional[np.random.Generator] = None) -> RoundPlan:
        """Round ``round_index`` (1-based): all ``clients``, or (with ``clients_per_round``
        and the phase's seeded ``rng``) a sample of them, and the round's config."""
        sampled = (list(range(clients)) if rng is None
                   else sample_participants(clients, clients_per_round, rng))
        return RoundPlan(round_index, sampled, self.round_config())

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

    def aggregate_updates(self, updates: list[ClientUpdate],
                          current: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The new global weights: FedAvg weighted by sample counts, or ``current``
        (unchanged) when the phase is not federated."""
        if not self.federated:
            return current
        return fedavg([u.weights for u in updates], [u.n_samples for u in updates])

    def aggregate_feature_pool(self, updates: list[ClientUpdate]) -> SharedFeatures:
        """What the next round broadcasts: every client's shared features. Each client
        leaves out its own when it reads the pool (``bank.merge_remote``)."""
        return {u.client: (u.features, u.partitions) for u in updates if u.features is not None}

    def traffic(self, updates: list[ClientUpdate], global_weights: Optional[np.ndarray],
                pool: Optional[SharedFeatures] = None,
                remote_sample: Optional[int] = None) -> Traffic:
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
        features = pooled = None
        if pool is not None:
            features = sum(u.nbytes_features for u in updates) + sum(features_in.values())
            pooled = sum(f.nbytes + p.nbytes for f, p in pool.values())
        return Traffic(bytes_weights=sum(u.nbytes_weights + down for u in updates),
                       bytes_sent_per_client={str(c): b for c, b in sent.items()},
                       bytes_received_per_client={str(c): b for c, b in received.items()},
                       bytes_per_client={str(c): sent[c] + received[c] for c in sent},
                       bytes_features=features, bytes_pool=pooled)

    # ------------------------------------------------------------------ federated fine-tuning
    def should_stop(self, stopper: EarlyStopping) -> bool:
        """After a validation of the global model: stop federated fine-tuning now?"""
        return stopper.should_stop

    def run_finetune(self, ft: FinetuneConfig, rounds: int, run_round: Callable[[], object],
                     validate: Callable[[], float],
                     current: Callable[[], np.ndarray]) -> tuple[Optional[np.ndarray], dict]:
        """The rounds of one federated fine-tuning setting, the runtime doing each round
        (``run_round``), the global model's mean validation Dice (``validate``) and handing
        the current global weights (``current``). ``finetune.budget=steps``: ``rounds``
        rounds. ``converge``: validate every ``eval_every`` steps (rounded up to rounds) up
        to ``max_steps``, until :meth:`should_stop`. Returns the weights to score on the test
        folds (None: the current ones) and what the results rows record (steps, ...)."""
        if ft.budget == "steps":
            for _ in range(rounds):
                run_round()
            return None, {"steps": rounds * ft.local_steps}
        max_rounds = -(-ft.max_steps // ft.local_steps)
        every = -(-ft.eval_every // ft.local_steps)
        stopper, best, done = EarlyStopping(ft.patience), None, 0
        for round_ in evaluation_steps(max_rounds, every):
            for _ in range(round_ - done):
                run_round()
            done = round_
            if stopper.update(validate(), done * ft.local_steps):
                best = current().copy()
            if self.should_stop(stopper):
                break
        return best, stopper.summary(done * ft.local_steps)


@dataclass(frozen=True)
class FedProx(Strategy):
    """FedProx (Li et al., MLSys 2020): FedAvg, with each client's local objective plus
    ``mu / 2 * ||w - w_global||^2``. ``mu`` reaches the clients in the round's config
    (``proximal_mu``); their training loops add the term (:mod:`fcl_ray.methods.proximal`)."""

    proximal_mu: float = 0.01
    name: ClassVar[str] = "fedprox"

    @classmethod
    def from_config(cls, fed: FederationConfig, contract: Contract,
                    federated: bool) -> "FedProx":
        return cls(contract, federated, fed.min_clients, proximal_mu=fed.proximal_mu)

    def round_config(self) -> RoundConfig:
        # Not federated (e.g. Local CL): no global model to stay close to.
        return {"proximal_mu": self.proximal_mu} if self.federated else {}


# federation.strategy -> class. config.STRATEGIES names the same keys (the schema imports
# nothing above it); tests/unit/test_strategy.py checks they agree.
REGISTRY: dict[str, type[Strategy]] = {"fedavg": Strategy, "fedprox": FedProx}


def make_strategy(fed: FederationConfig, contract: Contract, federated: bool) -> Strategy:
    """The strategy ``federation.strategy`` names, for one phase."""
    return REGISTRY[fed.strategy].from_config(fed, contract, federated)


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
