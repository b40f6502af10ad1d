"""Ablations of FCL (Wu et al., MICCAI 2021): each switches off one ingredient.

- ``fcl_no_exchange``: no feature exchange; Q' comes from the local bank only (so the
  structural-matching term uses local bank features only). Weights are still FedAvg'd.
- ``fcl_no_matching``: features are exchanged and used as negatives, but the global
  structural-matching (remote) term is dropped (lambda = 0): L = L_local.
- ``fcl_literal_negatives``: every feature of Q' is in the denominator, same-partition ones
  included (the literal reading of the loss, ``pretrain.negatives = all``).
Each keeps every other setting of the config.
"""
from __future__ import annotations

import dataclasses

from fcl_ray.methods.fcl import FCL


def _with_pretrain(cfg, **changes):
    return dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, **changes))


class FCLNoExchange(FCL):
    shares_features = False
    use_remote_features = False


class FCLNoMatching(FCL):
    def __init__(self, cfg, slices, generator, device):
        super().__init__(_with_pretrain(cfg, remote_weight=0.0), slices, generator, device)


class FCLLiteralNegatives(FCL):
    def __init__(self, cfg, slices, generator, device):
        super().__init__(_with_pretrain(cfg, negatives="all"), slices, generator, device)
