"""FCL: federated contrastive learning with feature exchange and structural matching.

Per client: a main encoder+head (gradients) and its momentum copy (EMA) that fills a
per-partition local bank. Each step draws K features Q' from the local bank and the remote
banks (features other clients shared last round), and minimises

    L = L_local + lambda * L_remote            (see fcl_ray.methods.losses.fcl_losses)

Choices (method notes):
- negatives: the rows of Q' of other partitions (``pretrain.negatives``) *and* the batch's own
  momentum keys of other partitions (``pretrain.fresh_negatives``). With stale negatives only
  (bank rows from earlier networks, remote rows a round old) the network learns to tell fresh
  from stale instead of base from apex and the embeddings collapse; fresh negatives, computed
  by this step's networks like Chaitanya et al.'s G^D batch, remove that shortcut.
- structural matching: the positives Lambda(q) of L_remote are the same-partition rows of Q'
  that came from *other clients* (``pretrain.matching: remote``), so the term is what the paper
  calls global matching; with no exchange (``fcl_no_exchange``, or round 1) it is zero, and
  ``fcl_no_exchange`` / ``fcl_no_matching`` isolate the exchange and the matching.

Weights shared by FedAvg: the main encoder+head, and the momentum encoder+head too when
``pretrain.aggregate_momentum`` is true (the default, so every client's bank is filled by the
same global momentum network); otherwise each client keeps its own momentum network.
"""
from __future__ import annotations

from typing import Optional

import torch

from fcl_ray.methods.bank import local_and_remote, sample_features
from fcl_ray.methods.losses import fcl_losses
from fcl_ray.methods.base import Features, MomentumBankMethod


class FCL(MomentumBankMethod):
    shares_features = True
    use_remote_features = True   # ablation "no exchange" sets this False

    def compute_loss(self, remote: Optional[Features]):
        p = self.cfg.pretrain
        idx, parts = self.sampler.sample(p.volumes_per_batch, self.gen)
        parts = parts.to(self.device)
        x = self.slices.images[idx.to(self.device)]
        q = self.embed(self.view(x), parts)
        with torch.no_grad():
            self._momentum_update()
            k = self.momentum_net(self.view(x))
        pool, pool_parts, pool_remote = local_and_remote(
            self.bank.contents(), remote if self.use_remote_features else None)
        queue, queue_parts, queue_remote = sample_features(pool, pool_parts, p.sample_size,
                                                           self.gen, pool_remote)
        local, remote_loss = fcl_losses(
            q, parts, k, parts, queue, queue_parts, p.temperature, p.negatives,
            fresh=p.fresh_negatives, queue_remote=queue_remote if p.matching == "remote" else None)
        self.bank.push(k, parts, idx)
        return local + p.remote_weight * remote_loss, {"loss_local": local.item(),
                                                      "loss_remote": remote_loss.item()}

    def shared_features(self):
        if not self.use_remote_features:
            return None
        return self._bank_sample_to_share()
