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

import copy
from typing import Optional

import numpy as np
import torch

from fcl_ray.augment import contrastive_view
from fcl_ray.bank import FeatureBank, concat_banks, sample_features
from fcl_ray.losses import fcl_losses
from fcl_ray.methods.base import Features, PartitionBatchSampler, PretrainMethod
from fcl_ray.models import EmbeddingNet


class FCL(PretrainMethod):
    shares_features = True
    use_remote_features = True   # ablation "no exchange" sets this False

    def __init__(self, cfg, slices, generator, device):
        super().__init__(cfg, slices, generator, device)
        p, m = cfg.pretrain, cfg.model
        self.net = EmbeddingNet(m.features, m.projection_hidden, m.projection_dim).to(device)
        self.momentum_net = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=p.lr)
        self.bank = FeatureBank(cfg.data.partitions, p.bank_size, m.projection_dim, device)
        self.sampler = PartitionBatchSampler(slices, cfg.data.partitions)
        self._fill_bank()

    def networks(self):
        nets = {"main": self.net}
        if self.cfg.pretrain.aggregate_momentum:
            nets["momentum"] = self.momentum_net
        return nets

    def encoder(self):
        return self.net.encoder

    @torch.no_grad()
    def _fill_bank(self, chunk: int = 64) -> None:
        """Start with a full local bank so Q' is never empty, even at step one."""
        for start in range(0, len(self.slices), chunk):
            x = self.slices.images[start:start + chunk]
            self.bank.push(self.momentum_net(contrastive_view(x, self.gen)),
                           self.slices.partition[start:start + chunk])

    @torch.no_grad()
    def _momentum_update(self) -> None:
        mom = self.cfg.pretrain.momentum
        for main, ema in zip(self.net.parameters(), self.momentum_net.parameters()):
            ema.mul_(mom).add_(main.detach(), alpha=1.0 - mom)

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
        p = self.cfg.pretrain
        # A random subset of the bank (the paper's K sampling) ...
        feats, parts = sample_features(*self.bank.contents(), p.exchange_size, self.gen)
        if p.feature_noise > 0:   # ... optionally blurred by Gaussian noise before it leaves
            noise = torch.randn(feats.shape, generator=self.gen).to(feats.device)
            feats = torch.nn.functional.normalize(feats + p.feature_noise * noise, dim=1)
        return feats.cpu().numpy().astype(np.float32), parts.cpu().numpy().astype(np.int16)
