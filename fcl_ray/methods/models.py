"""MONAI 2D U-Net whose encoder is pre-trained alone (with a projection head), then reused.

The encoder modules carry the *same attribute names* as in MONAI's ``BasicUNet``
(``conv_0``, ``down_1`` ... ``down_4``), so an encoder ``state_dict`` loads straight into the
full U-Net with ``load_state_dict(strict=False)`` and only the decoder starts random.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import nn

from fcl_ray.data.labels import CARDIAC_OUTPUTS

ENCODER_PREFIXES = ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4.")


def build_unet(features: Sequence[int], out_channels: int = CARDIAC_OUTPUTS) -> BasicUNet:
    """The full segmentation network (MONAI BasicUNet, 2D, one input channel); its
    ``out_channels`` are background + the classes (``fcl_ray.data.labels.network_outputs``).
    The output layer is built last, so the other layers' seeded init does not depend on it."""
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=out_channels,
                     features=tuple(features))


class Encoder(nn.Module):
    """The contracting half of BasicUNet; returns the deepest feature map."""

    def __init__(self, features: Sequence[int]):
        super().__init__()
        unet = build_unet(features)
        self.conv_0, self.down_1, self.down_2 = unet.conv_0, unet.down_1, unet.down_2
        self.down_3, self.down_4 = unet.down_3, unet.down_4
        self.out_channels = features[4]
        self.level_channels = tuple(features[:5])   # widths of the maps of levels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_4(self.down_3(self.down_2(self.down_1(self.conv_0(x)))))

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The map of every level, full resolution first (the U-Net's skip connections)."""
        maps = [self.conv_0(x)]
        for down in (self.down_1, self.down_2, self.down_3, self.down_4):
            maps.append(down(maps[-1]))
        return maps


class ProjectionHead(nn.Module):
    """Pool to a 4x4 grid -> flatten -> MLP -> L2-normalised embedding.

    Not a global average pool: BasicUNet's blocks end in instance norm, so the spatial mean
    of every channel is (nearly) the same for every image and a globally pooled embedding
    collapses to one point. Keeping a coarse 4x4 layout keeps where things are, which is
    what tells a basal slice from an apical one (Chaitanya et al. also flatten).
    """

    grid = 4

    def __init__(self, in_channels: int, hidden: int, out_dim: int, norm: str = "batch"):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(self.grid)
        # BatchNorm before the hidden ReLU (SimCLR, MoCo v2/v3 heads): it keeps the hidden
        # units centred and spread, so they cannot all die or agree; "none" is the old head.
        norm_layer = [nn.BatchNorm1d(hidden)] if norm == "batch" else []
        self.mlp = nn.Sequential(nn.Linear(in_channels * self.grid ** 2, hidden), *norm_layer,
                                 nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(self.pool(feature_map).flatten(1)), dim=1)


class EmbeddingNet(nn.Module):
    """Encoder + projection head: what contrastive pre-training trains."""

    def __init__(self, features: Sequence[int], hidden: int, out_dim: int, norm: str = "batch"):
        super().__init__()
        self.encoder = Encoder(features)
        self.head = ProjectionHead(self.encoder.out_channels, hidden, out_dim, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def load_encoder_into_unet(unet: BasicUNet, encoder_state: dict[str, torch.Tensor]) -> None:
    """Copy pre-trained encoder weights into a U-Net; the decoder keeps its random init."""
    missing, unexpected = unet.load_state_dict(encoder_state, strict=False)
    if unexpected:
        raise ValueError(f"encoder weights do not fit the U-Net: unexpected {unexpected[:3]}")
    not_decoder = [k for k in missing if k.startswith(ENCODER_PREFIXES)]
    if not_decoder:
        raise ValueError(f"encoder weights miss U-Net encoder parameters: {not_decoder[:3]}")


def encoder_and_decoder_parameters(unet: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """A U-Net's parameters split into its encoder's (names starting with
    ``ENCODER_PREFIXES``: what pre-training provides) and the rest (the decoder)."""
    encoder, decoder = [], []
    for name, param in unet.named_parameters():
        (encoder if name.startswith(ENCODER_PREFIXES) else decoder).append(param)
    return encoder, decoder


def autocast(device: torch.device, amp: str):
    """Mixed-precision context for training steps: bf16 autocast when ``amp == 'bf16'``."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")
