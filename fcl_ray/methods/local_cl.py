"""Local CL: Chaitanya et al., "Contrastive learning of global and local features for medical
image segmentation with limited annotations" (NeurIPS 2020), global loss with their G^D
strategy, run at every site alone: no FedAvg, no feature sharing (the paper's "Local CL").

Choices made here:
- batch: m volumes x one slice per partition (``PartitionBatchSampler``), two random views
  of every slice (``augment.contrastive_view``), so 2*m*S embeddings per step;
- positives of an embedding: every other embedding of the same partition in the batch (its
  own second view and the same-partition slices of the other volumes); negatives: the
  embeddings of the other partitions (G^D). One encoder, no momentum copy, no bank: the
  batch is the only source of keys, as in the original;
- encoder + head as FCL's (``models.EmbeddingNet``), Adam with ``pretrain.lr``,
  temperature ``pretrain.temperature``. Chaitanya's local (decoder) loss is not included;
  neither FCL nor its baselines pre-train the decoder.
"""
from __future__ import annotations

from typing import Optional

import torch

from fcl_ray.methods.losses import contrastive_loss
from fcl_ray.methods.base import Features, SingleNetworkMethod


class LocalCL(SingleNetworkMethod):
    federated = False            # each site keeps its own weights
    shares_features = False

    def compute_loss(self, remote: Optional[Features]):
        p = self.cfg.pretrain
        idx, parts = self.sampler.sample(p.volumes_per_batch, self.gen)
        x = self.slices.images[idx.to(self.device)]
        z = self.embed(torch.cat([self.view(x), self.view(x)]), parts)
        parts = torch.cat([parts, parts]).to(self.device)
        same = parts[:, None] == parts[None, :]
        not_self = ~torch.eye(len(z), dtype=torch.bool, device=self.device)
        return contrastive_loss(z, z, same & not_self, z, ~same, p.temperature), {}
