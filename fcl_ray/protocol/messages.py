"""What a client may send the coordinator, checked twice: at the site before it is sent, and
on arrival (defence in depth). Pure, no Ray.

Only three kinds of payload ever leave a site: model weights (one flat float vector of the
agreed length), feature vectors of the configured dimension with their partition labels, and
scalar metrics. Anything else (an image, a mask, a tensor of the wrong shape) is refused with
a message naming the client and the field: the site does not send it, and the coordinator
would reject it; either way that client sits the round out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

# The fine-tuning budget "every labeled training patient" (the upper bound), as the driver
# sends it; each client resolves it to its own count.
ALL_LABELED = -1


class MessageError(ValueError):
    """An update that breaks the message contract."""


class ClientNotReady(RuntimeError):
    """A round call reached a client that was never set up for the current phase: Ray
    restarted its process after the phase's set-up call (it died between two rounds, so no
    round call saw it die). The coordinator rebuilds it like a client that died mid-round."""


@dataclass
class ClientUpdate:
    client: int
    weights: np.ndarray                      # (P,) float32
    n_samples: int
    features: Optional[np.ndarray] = None    # (n, d) float32 embeddings
    partitions: Optional[np.ndarray] = None  # (n,) integer partition labels
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def nbytes_weights(self) -> int:
        return int(self.weights.nbytes)

    @property
    def nbytes_features(self) -> int:
        if self.features is None:
            return 0
        return int(self.features.nbytes + self.partitions.nbytes)


@dataclass(frozen=True)
class Contract:
    """What the coordinator expects this round."""
    n_weights: int
    feature_dim: Optional[int]   # None: the method shares no features
    partitions: int
    max_features: int


def phase_contract(info: dict, partitions: int, max_features: int) -> Contract:
    """The contract of a phase, from what a site's set-up call says it will send
    (``n_weights``, ``feature_dim``) and the config (``data.partitions``,
    ``pretrain.exchange_size``): the site and the coordinator build the same one."""
    return Contract(n_weights=info["n_weights"], feature_dim=info["feature_dim"],
                    partitions=partitions, max_features=max_features)


def check_update(update: object, contract: Contract) -> ClientUpdate:
    """Return ``update`` if it honours ``contract``; raise MessageError naming what is wrong."""
    if not isinstance(update, ClientUpdate):
        raise MessageError(f"expected a ClientUpdate, got {type(update).__name__}")
    who = f"client {update.client}"
    w = update.weights
    if not isinstance(w, np.ndarray) or w.dtype != np.float32 or w.shape != (contract.n_weights,):
        raise MessageError(f"{who}: weights must be float32 of shape ({contract.n_weights},), "
                           f"got {getattr(w, 'dtype', type(w).__name__)} {getattr(w, 'shape', '')}")
    if not np.isfinite(w).all():
        raise MessageError(f"{who}: weights contain NaN or infinity")
    if not isinstance(update.n_samples, int) or update.n_samples <= 0:
        raise MessageError(f"{who}: n_samples must be a positive int, got {update.n_samples!r}")
    for key, value in update.metrics.items():
        if not isinstance(key, str) or not isinstance(value, (int, float)):
            raise MessageError(f"{who}: metric {key!r} is not a scalar")
    if update.features is None:
        if update.partitions is not None:
            raise MessageError(f"{who}: partition labels sent without features")
        return update
    f, p = update.features, update.partitions
    if contract.feature_dim is None:
        raise MessageError(f"{who}: this method shares no features, got {f.shape}")
    if not (isinstance(f, np.ndarray) and f.dtype == np.float32 and f.ndim == 2
            and f.shape[1] == contract.feature_dim and f.shape[0] <= contract.max_features):
        raise MessageError(f"{who}: features must be float32 (n <= {contract.max_features}, "
                           f"{contract.feature_dim}), got {getattr(f, 'dtype', '?')} "
                           f"{getattr(f, 'shape', type(f).__name__)}")
    if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.integer)
            and p.shape == (f.shape[0],) and ((p >= 0) & (p < contract.partitions)).all()):
        raise MessageError(f"{who}: partition labels must be {f.shape[0]} integers in "
                           f"[0, {contract.partitions}), got {getattr(p, 'shape', p)}")
    if not np.isfinite(f).all():
        raise MessageError(f"{who}: features contain NaN or infinity")
    return update
