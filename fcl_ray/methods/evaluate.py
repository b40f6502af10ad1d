"""Dice per structure on whole held-out volumes, with MONAI's DiceMetric. No Ray."""
from __future__ import annotations

import numpy as np
import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from fcl_ray.data.labels import CARDIAC_CLASSES, CARDIAC_OUTPUTS, MEAN_COLUMN, dice_columns
from fcl_ray.data.slices import SliceSet

PREDICT_CHUNK = 64                  # slices per forward pass when predicting


@torch.inference_mode()
def predict_slices(unet: torch.nn.Module, images: torch.Tensor,
                   chunk: int = PREDICT_CHUNK) -> torch.Tensor:
    """Arg-max labels (N, H, W) for slices (N, 1, H, W), in batches of ``chunk``.

    Batching across volumes gives the same labels as one volume at a time: BasicUNet
    normalises per sample (instance norm), so a slice's output does not depend on its batch.
    The caller's train/eval mode is restored afterwards (early stopping evaluates mid-training).
    """
    was_training = unet.training
    unet.eval()
    try:
        return torch.cat([unet(images[i:i + chunk]).argmax(1)
                          for i in range(0, len(images), chunk)])
    finally:
        unet.train(was_training)


def dice_per_volume(unet: torch.nn.Module, test: SliceSet,
                    n_classes: int = CARDIAC_OUTPUTS) -> np.ndarray:
    """(V, n_classes-1) Dice of every test volume, computed in 3D over its slices.

    A structure absent from the ground truth but predicted scores 0 (a false positive is an
    error); absent from both gives NaN and is left out of the averages (nothing to find,
    nothing found: neither a hit nor a miss). All slices are predicted in a few batched
    forward passes, then scored volume by volume.
    """
    # ignore_empty=False: empty ground truth gives 1 if the prediction is empty too, else 0;
    # the "empty in both" case is turned into NaN below.
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    predicted = predict_slices(unet, test.images)
    scores = []
    for v in test.volume.unique().tolist():
        keep = test.volume == v
        # (1, C, D, H, W) one-hot, as DiceMetric expects a batch of 3D volumes.
        p = one_hot(predicted[keep][None, None], n_classes, dim=1)
        g = one_hot(test.labels[keep][None, None], n_classes, dim=1)
        dice = metric(p, g)[0].cpu().numpy()
        both_empty = ((p[0, 1:].flatten(1).sum(1) == 0) & (g[0, 1:].flatten(1).sum(1) == 0))
        dice[both_empty.cpu().numpy()] = np.nan
        scores.append(dice)
    return np.stack(scores)


def summarise_dice(per_volume: np.ndarray, classes=CARDIAC_CLASSES) -> dict[str, float]:
    """Mean over volumes per structure, plus their mean: {'dice_rv': .., 'dice_mean': ..}
    (column names from :func:`fcl_ray.data.labels.column_name`)."""
    if per_volume.shape[1] != len(classes):   # zip would drop a class without a word
        raise ValueError(f"{per_volume.shape[1]} Dice per volume for {len(classes)} classes "
                         f"({', '.join(classes)})")
    per_class = np.nanmean(per_volume, axis=0)
    out = {column: float(d) for column, d in zip(dice_columns(classes), per_class)}
    out[MEAN_COLUMN] = mean_over_classes(per_volume)
    return out


def mean_over_classes(per_volume: np.ndarray) -> float:
    """The mean over structures of their mean over volumes (NaN cells left out)."""
    return float(np.nanmean(np.nanmean(per_volume, axis=0)))


def mean_dice(unet: torch.nn.Module, volumes: SliceSet, n_classes: int = CARDIAC_OUTPUTS) -> float:
    """Mean Dice over structures of ``volumes`` (the early-stopping score)."""
    return mean_over_classes(dice_per_volume(unet, volumes, n_classes))
