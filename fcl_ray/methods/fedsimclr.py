"""FedSimCLR: SimCLR (Chen et al., "A simple framework for contrastive learning of visual
representations", ICML 2020) trained with FedAvg, a baseline of Wu et al. 2021.

Choices made here:
- batch: m volumes x one slice per partition (``PartitionBatchSampler``: the same batch size
  as FCL's), two random views per slice (``augment.contrastive_view``);
- NT-Xent (``losses.nt_xent_loss``): a view's only positive is the other view of the same
  slice, all other 2B-2 embeddings of the batch are negatives (partitions are ignored, so
  same-level slices of other volumes are pushed apart: what FCL argues against);
- encoder + projection head (``models.EmbeddingNet``), both averaged by FedAvg; Adam with
  ``pretrain.lr`` (SimCLR's LARS and huge batches do not fit a few-volume site).
"""
from __future__ import annotations

from typing import Optional

import torch

from fcl_ray.methods.losses import nt_xent_loss
from fcl_ray.methods.base import Features, SingleNetworkMethod


class FedSimCLR(SingleNetworkMethod):
    federated = True
    shares_features = False

    def compute_loss(self, remote: Optional[Features]):
        idx, parts = self.sampler.sample(self.cfg.pretrain.volumes_per_batch, self.gen)
        x = self.slices.images[idx.to(self.device)]
        # (partitions: for the health figures only; the loss ignores them)
        z1, z2 = self.embed(torch.cat([self.view(x), self.view(x)]), parts).chunk(2)
        return nt_xent_loss(z1, z2, self.cfg.pretrain.temperature), {}
