"""The positive control ``supervised_encoder``: a U-Net encoder trained WITH labels. No Ray.

A benchmark in which no encoder beats random init cannot tell "the method does not work" from
"this protocol cannot reward any encoder". The control answers that: a full MONAI BasicUNet
is trained with Dice-CE (the fine-tuning trainer and augmentation) on every labeled volume of
patients *outside* the benchmark's sites, and its encoder half (``conv_0`` .. ``down_4``) is
then fine-tuned exactly like every pre-trained encoder.

Its patients come from the run's own data loader (:func:`fcl_ray.data.load_client_volumes`)
with another seed and the ``control`` section's site and case counts, so the control always
follows the phantom (and phantom version) the run uses.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from fcl_ray.config import Config
from fcl_ray.data import load_client_volumes
from fcl_ray.data.slices import SliceSet, volumes_to_slices
from fcl_ray.methods.finetune import SegmentationTrainer, init_unet
from fcl_ray.methods.models import ENCODER_PREFIXES


def control_seed(cfg: Config) -> int:
    """The seed of the control's patients, U-Net init and batches."""
    return cfg.experiment.seed + cfg.control.seed_offset


def control_config(cfg: Config) -> Config:
    """``cfg`` whose data are the control's patients: ``control.sites`` sites of
    ``control.cases_per_site`` patients, drawn with :func:`control_seed` (every other data
    key, the phantom's included, as the run has them)."""
    c = cfg.control
    return dataclasses.replace(
        cfg, experiment=dataclasses.replace(cfg.experiment, seed=control_seed(cfg)),
        data=dataclasses.replace(cfg.data, clients=c.sites, cases_per_client=c.cases_per_site))


def control_slices(cfg: Config) -> SliceSet:
    """Every labeled volume (``data.phases``) of the control's sites, sliced and normalised
    as a client slices its own."""
    control = control_config(cfg)
    volumes = [v for site in range(control.data.clients)
               for v in load_client_volumes(control, site) if v.label is not None]
    return volumes_to_slices([v.image for v in volumes], [v.label for v in volumes],
                             cfg.data.partitions, normalise=cfg.data.normalise)


def control_trainer(cfg: Config, device: torch.device) -> SegmentationTrainer:
    """A randomly initialised full U-Net and its Dice-CE trainer on the control's slices
    (``control.lr``, ``control.batch_size``)."""
    seed = control_seed(cfg)
    slices = control_slices(cfg).to(device)
    unet = init_unet(cfg.model.features, None, seed=seed, device=device)
    if cfg.model.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
        slices.images = slices.images.contiguous(memory_format=torch.channels_last)
    return SegmentationTrainer(unet, slices, cfg.control.batch_size, cfg.control.lr,
                               torch.Generator().manual_seed(seed), amp=cfg.model.amp)


def encoder_half(unet: torch.nn.Module) -> dict[str, np.ndarray]:
    """The encoder parameters of a U-Net (the names :class:`~fcl_ray.methods.models.Encoder`
    has), as arrays (copies: the U-Net may train on): what every client fine-tunes from."""
    return {k: v.detach().cpu().clone().numpy() for k, v in unet.state_dict().items()
            if k.startswith(ENCODER_PREFIXES)}
