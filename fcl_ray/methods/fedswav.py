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
  recipe, the codes are computed over [queue; batch]: a FIFO of this client's last embeddings
  (``pretrain.bank_size`` per partition x partitions; never shared), used only once it is
  full, as SwAV starts its queue late; only the batch rows are used;
- SwAV's safeguards: prototypes frozen (no gradient) for the first ``freeze_fraction`` of all
  pre-training steps, and the late queue above. Without them the embeddings collapsed to one
  point within 80 steps at lr 1e-3 (the first benchmark, commit 913d25b);
- not included: multi-crop, LARS.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from fcl_ray.methods.losses import sinkhorn, swav_loss
from fcl_ray.methods.base import Features, PartitionBatchSampler, PretrainMethod, bank_capacity
from fcl_ray.methods.models import EmbeddingNet


class FedSwAV(PretrainMethod):
    federated = True
    shares_features = False
    n_prototypes = 32
    epsilon = 0.05
    sinkhorn_iterations = 3
    freeze_fraction = 0.1   # prototypes fixed for this share of all pre-training steps
    checkpointed = PretrainMethod.checkpointed + ("net", "prototypes", "optimizer", "queue",
                                                  "step_count")

    def __init__(self, cfg, slices, generator, device):
        super().__init__(cfg, slices, generator, device)
        m, p = cfg.model, cfg.pretrain
        self.net = EmbeddingNet(m.features, m.projection_hidden, m.projection_dim, m.head_norm).to(device)
        self.prototypes = nn.Linear(m.projection_dim, self.n_prototypes, bias=False).to(device)
        params = list(self.net.parameters()) + list(self.prototypes.parameters())
        self.optimizer = torch.optim.Adam(params, lr=p.lr)
        self.sampler = PartitionBatchSampler(slices, cfg.data.partitions, p.batch_by)
        self.queue_length = bank_capacity(cfg, len(slices)) * cfg.data.partitions
        self.queue = torch.zeros(0, m.projection_dim, device=device)
        self.freeze_steps = int(self.freeze_fraction * p.rounds * p.local_steps)
        self.step_count = torch.zeros((), dtype=torch.long)

    def networks(self):
        return {"main": self.net, "prototypes": self.prototypes}

    def encoder(self):
        return self.net.encoder

    def _codes(self, scores: torch.Tensor) -> torch.Tensor:
        """Sinkhorn codes of the batch, computed together with the queue's scores once the
        queue is full (SwAV starts its queue late: a half-empty queue of stale embeddings
        skews the equipartition)."""
        with torch.no_grad():
            queued = (self.queue @ self.prototypes.weight.T if len(self.queue) >= self.queue_length
                      else scores.new_zeros(0, scores.shape[1]))
            codes = sinkhorn(torch.cat([queued, scores.detach()]), self.epsilon,
                             self.sinkhorn_iterations)
        return codes[len(queued):]

    def compute_loss(self, remote: Optional[Features]):
        p = self.cfg.pretrain
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        idx, parts = self.sampler.sample(p.volumes_per_batch, self.gen)   # parts: health only
        x = self.slices.images[idx.to(self.device)]
        z = self.embed(torch.cat([self.view(x), self.view(x)]), parts)
        frozen = int(self.step_count) < self.freeze_steps
        # Frozen prototypes: no gradient reaches them (SwAV freezes them during the first
        # epoch, else they chase the still-random embeddings and the codes collapse).
        weight = self.prototypes.weight.detach() if frozen else self.prototypes.weight
        scores1, scores2 = (z @ weight.T).chunk(2)
        loss = swav_loss(scores1, scores2, self._codes(scores1), self._codes(scores2),
                         p.temperature)
        self.queue = torch.cat([z.detach(), self.queue])[:self.queue_length]
        self.step_count += 1
        return loss, {"prototypes_frozen": float(frozen)}
