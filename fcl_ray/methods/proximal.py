"""FedProx's proximal term: ``mu / 2 * ||w - w_global||^2`` on a client's local objective.

It keeps a client's local steps near the global model it started the round from (Li et al.,
MLSys 2020). The strategy (``federation.strategy=fedprox``) sends ``mu`` with each round;
the site anchors the term at the weights it just loaded and the training loops
(:meth:`PretrainMethod.train_step`, :meth:`SegmentationTrainer.train`) add it to the loss.
"""
from __future__ import annotations

from typing import Iterable

import torch


class ProximalTerm:
    """``mu / 2 * sum ||p - p_anchor||^2`` over ``params``, anchored at their current values."""

    def __init__(self, params: Iterable[torch.nn.Parameter], mu: float):
        self.params = list(params)
        self.anchor = [p.detach().clone() for p in self.params]
        self.mu = float(mu)

    def __call__(self) -> torch.Tensor:
        total = sum(((p.float() - a.float()) ** 2).sum() for p, a in zip(self.params, self.anchor))
        return 0.5 * self.mu * total


def proximal_term(params: Iterable[torch.nn.Parameter], config: dict) -> "ProximalTerm | None":
    """The round's proximal term, if its config carries ``proximal_mu`` > 0 (FedProx)."""
    mu = (config or {}).get("proximal_mu", 0.0)
    return ProximalTerm(params, mu) if mu > 0 else None
