"""FedRotation: rotation prediction (Gidaris et al., "Unsupervised representation learning
by predicting image rotations", ICLR 2018) trained with FedAvg, a baseline of Wu et al. 2021.

Choices made here:
- every step takes m volumes x one slice per partition (``PartitionBatchSampler``), applies
  one mild random view (``augment.contrastive_view``) and then all four quarter turns to
  every slice (Gidaris et al. found feeding the four rotations together works best), so the
  batch is 4*m*S images with labels 0, 1, 2, 3 = 0, 90, 180, 270 degrees counter-clockwise;
- the classifier sits on the U-Net encoder: pool to a 4x4 grid, flatten, MLP
  (``model.projection_hidden``) -> 4 logits. A global average pool would see nearly the
  same vector for every image after BasicUNet's instance norms (see models.ProjectionHead);
- FedAvg averages the encoder and the classifier; the encoder initialises fine-tuning.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fcl_ray.methods.losses import rotation_loss
from fcl_ray.methods.base import Features, SingleNetworkMethod
from fcl_ray.methods.models import Encoder


def rotate_quarter_turns(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of a (B, C, H, W) batch of square images: (4B, C, H, W) images
    ordered [all 0 deg, all 90 deg, all 180 deg, all 270 deg] and their labels (4B,)."""
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, labels


class RotationNet(nn.Module):
    """U-Net encoder + 4-way rotation classifier."""

    def __init__(self, features, hidden: int):
        super().__init__()
        self.encoder = Encoder(features)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(self.encoder.out_channels * 16, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


class FedRotation(SingleNetworkMethod):
    federated = True
    shares_features = False

    def build_net(self) -> nn.Module:
        return RotationNet(self.cfg.model.features, self.cfg.model.projection_hidden)

    # A classifier's hidden layer is no normalised embedding: its vectors share a large common
    # part (biases, non-negative ReLU outputs), so their raw cosines sit near 1 however healthy
    # the network is. Health centres them first; collapse then shows as a rank near 1.
    health_centred = True
    # Its step sees four rotations of every slice, no embedding of the slice itself: the
    # health figures come from the probe batch whatever pretrain.health_source says.
    health_from_steps = False

    def embedding(self):
        """Health is read on the classifier's hidden layer (it has no projection head)."""
        return nn.Sequential(self.net.encoder, *self.net.classifier[:-1]), self.net.classifier

    def compute_loss(self, remote: Optional[Features]):
        idx, _ = self.sampler.sample(self.cfg.pretrain.volumes_per_batch, self.gen)
        x = self.view(self.slices.images[idx.to(self.device)], flips=False)
        rotated, labels = rotate_quarter_turns(x)
        logits = self.net(rotated)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return rotation_loss(logits, labels), {"accuracy": accuracy.item()}
