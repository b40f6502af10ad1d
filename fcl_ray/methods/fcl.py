"""FCL: federated contrastive learning with feature exchange and structural matching.

Per client: a main encoder+head (gradients) and its momentum copy (EMA) that fills a
per-partition local bank. Each step draws K features Q' from the local bank and the remote
banks (features other clients shared last round), and minimises

    L = L_local + lambda * L_remote            (see fcl_ray.losses.fcl_losses)

Weights shared by FedAvg: the main encoder+head, and the momentum encoder+head too when
``pretrain.aggregate_momentum`` is true (the default, so every client's bank is filled by the
same global momentum network); otherwise each client keeps its own momentum network.
"""
from __future__ import annotations

from typing import Optional

import torch

from fcl_ray.augment import contrastive_view
from fcl_ray.bank import concat_banks, sample_features
from fcl_ray.losses import fcl_losses
from fcl_ray.methods.base import Features, MomentumBankMethod


class FCL(MomentumBankMethod):
    shares_features = True
    use_remote_features = True   # ablation "no exchange" sets this False

    def train_step(self, remote: Optional[Features]) -> dict[str, float]:
        p = self.cfg.pretrain
        idx, parts = self.sampler.sample(p.volumes_per_batch, self.gen)
        parts = parts.to(self.device)
        x = self.slices.images[idx.to(self.device)]
        q = self.net(contrastive_view(x, self.gen))
        with torch.no_grad():
            self._momentum_update()
            k = self.momentum_net(contrastive_view(x, self.gen))
        pool = concat_banks([self.bank.contents(), remote if self.use_remote_features else None])
        queue, queue_parts = sample_features(*pool, p.sample_size, self.gen)
        local, remote_loss = fcl_losses(q, parts, k, parts, queue, queue_parts, p.temperature,
                                        p.negatives)
        loss = local + p.remote_weight * remote_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.bank.push(k, parts)
        return {"loss": loss.item(), "loss_local": local.item(), "loss_remote": remote_loss.item()}

    def shared_features(self):
        if not self.use_remote_features:
            return None
        return self._bank_sample_to_share()
