"""Typed round reports and progress events, instead of dicts read by string key.

- :class:`Traffic` and :class:`RoundReport`: what one federated round did (who took part,
  who was left out and why, bytes moved, time), as the runtime's coordinator returns it.
- :class:`FederationReady`, :class:`PretrainRound`, :class:`SettingFinished`: the progress
  events ``run_experiment`` hands its ``reporter`` (Ray Tune's trainable, tests). Each has a
  ``phase`` ("ready", "pretrain", "finetune") to tell them apart.

Plain dataclasses: they cross a runtime's process boundary (pickled by Ray) unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Union

from fcl_ray.core import metrics as names


@dataclass(frozen=True)
class Traffic:
    """Bytes one round moved: weights (sent and received, all clients), features (sent and
    received; pre-training only, else None), the pool object every client read (pre-training
    only), and per client (keys: client id as a string, as JSON writes them)."""
    bytes_weights: int
    bytes_sent_per_client: dict[str, int]
    bytes_received_per_client: dict[str, int]
    bytes_per_client: dict[str, int]
    bytes_features: Optional[int] = None
    bytes_pool: Optional[int] = None


@dataclass
class RoundReport:
    """One round, as the coordinator saw it.

    ``sampled``: the clients asked; ``participants``: those whose updates counted (client
    order); ``dropped``: {client: why} of the last attempt; ``dropped_retried``: the same for
    each earlier attempt that had to be retried; ``clients``: each participant's scalar
    metrics with its ``client`` id; ``rejoined``: the clients rebuilt after a restart that
    are back from this round on, {client: {"rounds_missed": rounds since the one it died
    in, "restored_round": the round checkpoint it restored its own state from, or None with
    "fresh_start": why it started afresh}}."""
    round: int
    sampled: list[int]
    participants: list[int]
    dropped: dict[str, str]
    retries: int
    dropped_retried: list[dict[str, str]]
    aggregate_seconds: float
    clients: list[dict[str, Any]] = field(default_factory=list)
    traffic: Optional[Traffic] = None
    round_seconds: float = 0.0
    rejoined: dict[str, dict[str, Any]] = field(default_factory=dict)

    def mean_loss(self) -> float:
        return sum(c["loss"] for c in self.clients) / len(self.clients)


@dataclass(frozen=True)
class FederationReady:
    """The federation is up: each client's ``info`` (patients, volumes, slices, device).
    ``client_handles`` and ``coordinator``: the runtime's handles to them (Ray actor handles
    under the Ray runtime, for the sweep's placement check; None where a runtime has none)."""
    clients: list[dict[str, Any]]
    client_handles: Optional[list] = None
    coordinator: Any = None
    phase: ClassVar[str] = "ready"


@dataclass(frozen=True)
class PretrainRound:
    """One finished pre-training round of ``method`` on ``fold`` (``round`` is 1-based)."""
    method: str
    fold: int
    round: int
    loss: float                        # mean over the round's participants
    round_seconds: float
    bytes_weights: int
    bytes_features: int
    clients_participated: int
    clients_sampled: int
    bytes_pool: int
    health: dict[str, float] = field(default_factory=dict)   # mean over clients; {}: not measured
    collapsed: Optional[bool] = None   # None: health not measured this round
    probe_dice: Optional[float] = None   # None: no probe this round
    phase: ClassVar[str] = "pretrain"

    def metrics(self) -> dict[str, float]:
        """The round's scalars by metric name (what MLflow and Ray Tune record)."""
        out = {"loss": self.loss, "round_seconds": self.round_seconds,
               "bytes_weights": self.bytes_weights, "bytes_features": self.bytes_features,
               "clients_participated": self.clients_participated,
               "clients_sampled": self.clients_sampled, "bytes_pool": self.bytes_pool,
               **{names.health(k): v for k, v in self.health.items()}}
        if self.collapsed is not None:
            out["collapsed"] = float(self.collapsed)
        if self.probe_dice is not None:
            out["probe_dice"] = self.probe_dice
        return out


@dataclass(frozen=True)
class SettingFinished:
    """A fine-tuning setting (method x mode x N on a fold) finished: its mean Dice over clients
    on their test patients, and (``finetune.budget=converge``) on their validating patients,
    the one a choice may be made on."""
    method: str
    finetune_mode: str
    n_labeled: int
    fold: int
    dice_mean: float
    val_dice: Optional[float] = None
    phase: ClassVar[str] = "finetune"

    def metric_name(self) -> str:
        return names.setting("dice_mean", self.method, self.finetune_mode, self.n_labeled)


Event = Union[FederationReady, PretrainRound, SettingFinished]
Reporter = Callable[[Event], None]
