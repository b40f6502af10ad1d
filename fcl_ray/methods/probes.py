"""Frozen-encoder probes: what an encoder knows, measured without fine-tuning. No Ray.

Fine-tuning a whole U-Net from one labeled patient is noisy (the decoder starts random, early
stopping picks a step), so the Dice of a fine-tune says little about the encoder it started
from. These probes keep the encoder frozen and fit only a linear read-out:

- ``partition_accuracy``: a multinomial logistic regression of the slice's base-to-apex
  partition on the encoder's pooled features, fit on the other sites' slices, scored on this
  site's held-out slices. Chance: 1 / partitions.
- ``position_dt`` and ``position_same_partition``: for each held-out slice of this site, its
  cosine nearest neighbour among the other sites' slices; the mean |t_query - t_neighbour|
  of their relative positions t in [0, 1] of the stack (lower is better; a random neighbour
  gives about 1/3, exactly (D + 1) / (3 D) for stacks of D slices), and how often the
  neighbour is in the same partition (a random one: about 1 / partitions).
- ``segmentation_dice``: a 1x1 convolution (per-pixel linear) on the encoder's hypercolumns,
  trained with Dice-CE on a site's labeled slices, scored by mean foreground Dice (MONAI
  DiceMetric, per volume as fine-tuning is scored) on its test slices.

Everything is deterministic given the seeds: logistic regression starts from zero weights
(a convex fit, no seed needed), the segmentation head too; only its batches are drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from fcl_ray.data.slices import SliceSet
from fcl_ray.data.labels import CARDIAC_OUTPUTS
from fcl_ray.methods.evaluate import dice_per_volume, mean_over_classes
from fcl_ray.methods.models import Encoder, ProjectionHead

# Probe names: the ``probe`` column of probes.csv.
PARTITION_ACCURACY = "partition_accuracy"
POSITION_DT = "position_dt"
SAME_PARTITION = "position_same_partition"
SEGMENTATION_DICE = "segmentation_dice"
PROBES = (PARTITION_ACCURACY, POSITION_DT, SAME_PARTITION, SEGMENTATION_DICE)

FEATURE_CHUNK = 64        # slices per encoder forward pass
LOGISTIC_STEPS = 100      # L-BFGS iterations of the partition probe
LOGISTIC_L2 = 1e-3        # its weight penalty (on standardised features)
SEGMENTATION_LR = 1e-2    # Adam rate of the segmentation probe's 1x1 convolution
SEGMENTATION_BATCH = 8    # labeled slices per step


# ----------------------------------------------------------------------------- the encoder
def frozen_encoder(features: Sequence[int], state: Optional[dict] = None, seed: int = 0,
                   device: torch.device | str = "cpu") -> Encoder:
    """The encoder to probe, without gradients: ``state`` loaded, or (None) random init drawn
    from ``seed``, the same weights as the encoder of ``init_unet(features, None, seed)``, so
    random init's probes describe what random-init fine-tuning starts from."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = Encoder(features)
    if state is not None:
        encoder.load_state_dict(state)
    return encoder.requires_grad_(False).to(device).eval()


@torch.no_grad()
def pooled_features(encoder: Encoder, images: torch.Tensor,
                    chunk: int = FEATURE_CHUNK) -> torch.Tensor:
    """(N, C * 16) on the CPU: the deepest map average-pooled to 4x4 and flattened, the
    input of the projection head (a global pool would lose where things are)."""
    grid = ProjectionHead.grid
    return torch.cat([F.adaptive_avg_pool2d(encoder(images[i:i + chunk]), grid).flatten(1)
                      for i in range(0, len(images), chunk)]).float().cpu()


# ----------------------------------------------------------------------------- cross-site probes
@dataclass
class SiteFeatures:
    """What one site sends for the cross-site probes: features and labels, never images."""
    features: torch.Tensor            # (N, D) pooled features of its slices
    partition: torch.Tensor           # (N,) int64, 0 = base
    position: torch.Tensor            # (N,) relative position in the stack, 0 = base, 1 = apex
    # (N,) bool: the slices this site is scored on (its test-fold patients); the others are
    # what the other sites' probes learn from. None: every slice on both sides.
    held_out: Optional[torch.Tensor] = None

    @classmethod
    def from_arrays(cls, arrays: dict) -> "SiteFeatures":
        """From the arrays a client returns (keys as the fields; copied, since arrays out
        of Ray's object store are read-only)."""
        held_out = arrays.get("held_out")
        return cls(torch.tensor(np.array(arrays["features"]), dtype=torch.float32),
                   torch.tensor(np.array(arrays["partition"]), dtype=torch.long),
                   torch.tensor(np.array(arrays["position"]), dtype=torch.float32),
                   None if held_out is None else torch.tensor(np.array(held_out),
                                                              dtype=torch.bool))

    def rows(self, held_out: bool) -> torch.Tensor:
        """Mask of the scored slices (``held_out``) or of the ones others learn from."""
        if self.held_out is None:
            return torch.ones(len(self.features), dtype=torch.bool)
        return self.held_out if held_out else ~self.held_out


def _split_sites(sites: Sequence[SiteFeatures], held_out: int):
    """(reference rows of every other site concatenated, the held-out site's scored rows),
    each as (features, partition, position)."""
    if len(sites) < 2:
        raise ValueError("cross-site probes need at least 2 sites")
    others = [s for i, s in enumerate(sites) if i != held_out]
    reference = [torch.cat([getattr(s, f)[s.rows(False)] for s in others])
                 for f in ("features", "partition", "position")]
    site = sites[held_out]
    scored = [getattr(site, f)[site.rows(True)] for f in ("features", "partition", "position")]
    return reference, scored


def standardise(reference: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """``reference`` and ``others`` centred and scaled by the reference's mean and std.
    Dimensions constant over the reference carry no information there and become 0."""
    mean, std = reference.mean(0), reference.std(0, unbiased=False)
    scale = torch.where(std > 1e-6, std, torch.full_like(std, torch.inf))
    return [(x - mean) / scale for x in (reference, *others)]


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, n_classes: int,
                            steps: int = LOGISTIC_STEPS, l2: float = LOGISTIC_L2) -> nn.Linear:
    """Multinomial logistic regression (mean cross-entropy + ``l2`` * |W|^2), full-batch
    L-BFGS for at most ``steps`` iterations from zero weights."""
    model = nn.Linear(x.shape[1], n_classes)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimiser = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=steps,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(model(x), y) + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    return model


def partition_probe(sites: Sequence[SiteFeatures], held_out: int, n_partitions: int,
                    steps: int = LOGISTIC_STEPS, l2: float = LOGISTIC_L2) -> float:
    """Accuracy on site ``held_out``'s scored slices of a partition classifier fit on every
    other site's slices (features standardised with the training slices' statistics)."""
    (x_train, y_train, _), (x_test, y_test, _) = _split_sites(sites, held_out)
    x_train, x_test = standardise(x_train, x_test)
    model = fit_logistic_regression(x_train, y_train, n_partitions, steps, l2)
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def position_retrieval(sites: Sequence[SiteFeatures], held_out: int) -> tuple[float, float]:
    """(mean |t_query - t_neighbour|, same-partition rate) of each scored slice of site
    ``held_out`` and its cosine nearest neighbour among the other sites' slices (features
    standardised with those slices' statistics)."""
    (x_db, part_db, pos_db), (x_q, part_q, pos_q) = _split_sites(sites, held_out)
    x_db, x_q = standardise(x_db, x_q)
    nearest = (F.normalize(x_q, dim=1) @ F.normalize(x_db, dim=1).T).argmax(1)
    dt = (pos_q - pos_db[nearest]).abs().mean()
    same = (part_q == part_db[nearest]).float().mean()
    return float(dt), float(same)


def cross_site_probes(sites: Sequence[SiteFeatures], held_out: int,
                      n_partitions: int) -> dict[str, float]:
    """Every cross-site probe of site ``held_out``: {probe name: value}."""
    dt, same = position_retrieval(sites, held_out)
    return {PARTITION_ACCURACY: partition_probe(sites, held_out, n_partitions),
            POSITION_DT: dt, SAME_PARTITION: same}


# ----------------------------------------------------------------------------- segmentation
class HypercolumnProbe(nn.Module):
    """A frozen encoder and a 1x1 convolution on its hypercolumns: every level's map
    upsampled bilinearly to the input size and concatenated. Only the convolution learns."""

    def __init__(self, encoder: Encoder, n_classes: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False)
        self.head = nn.Conv2d(sum(encoder.level_channels), n_classes, kernel_size=1)
        nn.init.zeros_(self.head.weight)   # a linear model: zero is a fine, seed-free start
        nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def levels(self, images: torch.Tensor, chunk: int = FEATURE_CHUNK) -> list[torch.Tensor]:
        """The frozen encoder's maps, level by level (computed once while the head trains)."""
        parts = [self.encoder.levels(images[i:i + chunk]) for i in range(0, len(images), chunk)]
        return [torch.cat(level).float() for level in zip(*parts)]

    def classify(self, maps: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """The 1x1 convolution of the hypercolumns, computed level by level: bilinear
        upsampling is linear with the same weights for every channel, so it commutes with a
        1x1 convolution; projecting each level to the classes first and upsampling those
        few channels gives the same logits without the (N, sum C, H, W) hypercolumn tensor."""
        weights = self.head.weight.split(list(self.encoder.level_channels), dim=1)
        logits = sum(F.interpolate(F.conv2d(m, w), size=tuple(size), mode="bilinear",
                                   align_corners=False) for m, w in zip(maps, weights))
        return logits + self.head.bias[:, None, None]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.levels(images), images.shape[-2:])


def segmentation_probe(encoder: Encoder, labeled: SliceSet, test: SliceSet,
                       n_classes: int = CARDIAC_OUTPUTS,
                       steps: int = 200, seed: int = 0, lr: float = SEGMENTATION_LR,
                       batch_size: int = SEGMENTATION_BATCH) -> float:
    """Mean foreground Dice on ``test`` of a per-pixel linear classifier on the frozen
    ``encoder``'s hypercolumns, trained with Dice-CE (Adam, ``steps`` steps of ``batch_size``
    slices drawn from ``labeled`` with a generator seeded by ``seed``; no augmentation)."""
    if len(labeled) == 0:
        raise ValueError("no labeled slices for the segmentation probe")
    probe = HypercolumnProbe(encoder, n_classes).to(labeled.images.device)
    maps = probe.levels(labeled.images)   # the encoder runs once
    size = labeled.images.shape[-2:]
    optimiser = torch.optim.Adam(probe.head.parameters(), lr=lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(labeled), (batch_size,), generator=generator)
        idx = idx.to(labeled.images.device)
        loss = loss_fn(probe.classify([m[idx] for m in maps], size), labeled.labels[idx][:, None])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return mean_over_classes(dice_per_volume(probe, test, n_classes))
