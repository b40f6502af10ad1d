"""FedSwAV: SwAV (Caron et al., "Unsupervised learning of visual features by contrasting
cluster assignments", NeurIPS 2020) trained with FedAvg, a baseline of Wu et al. 2021.

Per step: two random views of a batch (m volumes x one slice per partition), L2-normalised
embeddings z (``models.EmbeddingNet``), scores against K L2-normalised prototypes, codes by
Sinkhorn-Knopp (``losses.sinkhorn``, eps 0.05, 3 iterations), and the swapped prediction
loss (``losses.swav_loss``, temperature ``pretrain.temperature``).

Choices made here:
- K = ``n_prototypes`` (32) prototypes, re-normalised before every step, averaged by FedAvg
  together with the encoder and head (the plain federated SwAV of the FCL paper);
- a batch of a few dozen slices is far smaller than K x a few, so, like SwAV's small-batch
  recipe, the codes are computed over [queue; batch]: a FIFO of the last ``pretrain.bank_size``
  embeddings of this client (never shared); only the batch rows are used;
- not included: multi-crop, freezing the prototypes during the first epoch, LARS. Without
  them, at lr 1e-3 on the synthetic benchmark the embeddings collapsed to one point within
  80 steps (experiments/results/README.md): a known SwAV failure mode at small batches.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fcl_ray.augment import contrastive_view
from fcl_ray.losses import sinkhorn, swav_loss
from fcl_ray.methods.base import Features, PartitionBatchSampler, PretrainMethod
from fcl_ray.models import EmbeddingNet


class FedSwAV(PretrainMethod):
    federated = True
    shares_features = False
    n_prototypes = 32
    epsilon = 0.05
    sinkhorn_iterations = 3

    def __init__(self, cfg, slices, generator, device):
        super().__init__(cfg, slices, generator, device)
        m = cfg.model
        self.net = EmbeddingNet(m.features, m.projection_hidden, m.projection_dim).to(device)
        self.prototypes = nn.Linear(m.projection_dim, self.n_prototypes, bias=False).to(device)
        params = list(self.net.parameters()) + list(self.prototypes.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.pretrain.lr)
        self.sampler = PartitionBatchSampler(slices, cfg.data.partitions)
        self.queue = torch.zeros(0, m.projection_dim, device=device)

    def networks(self):
        return {"main": self.net, "prototypes": self.prototypes}

    def encoder(self):
        return self.net.encoder

    def _codes(self, scores: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of the batch, computed together with the queue's scores."""
        with torch.no_grad():
            queued = self.queue @ self.prototypes.weight.T
            codes = sinkhorn(torch.cat([queued, scores.detach()]), self.epsilon,
                             self.sinkhorn_iterations)
        return codes[len(queued):]

    def train_step(self, remote: Optional[Features]) -> dict[str, float]:
        p = self.cfg.pretrain
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        idx, _ = self.sampler.sample(p.volumes_per_batch, self.gen)
        x = self.slices.images[idx.to(self.device)]
        z = self.net(torch.cat([contrastive_view(x, self.gen), contrastive_view(x, self.gen)]))
        scores1, scores2 = self.prototypes(z).chunk(2)
        loss = swav_loss(scores1, scores2, self._codes(scores1), self._codes(scores2),
                         p.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.queue = torch.cat([z.detach(), self.queue])[:p.bank_size]
        return {"loss": loss.item()}
