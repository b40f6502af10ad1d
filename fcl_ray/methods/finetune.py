"""Supervised fine-tuning of the full U-Net on a client's few labeled volumes. No Ray."""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch
from monai.losses import DiceCELoss

from fcl_ray.data.labels import CARDIAC_OUTPUTS
from fcl_ray.methods.augment import segmentation_augment
from fcl_ray.core.early_stopping import EarlyStopping, evaluation_steps
from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.models import (autocast, build_unet, encoder_and_decoder_parameters,
                                    load_encoder_into_unet)


_GLOBAL_RNG_LOCK = threading.Lock()


def init_unet(features, encoder_state: Optional[dict], seed: int, device: torch.device,
              out_channels: int = CARDIAC_OUTPUTS) -> torch.nn.Module:
    """A U-Net whose random part is drawn from ``seed`` (so pre-trained and random-init runs
    share the same decoder init) and whose encoder is ``encoder_state`` when given;
    ``out_channels``: background + the classes.

    Thread-safe: MONAI layers draw their init from torch's one global generator, so
    concurrent fine-tunes in one actor (``finetune.concurrency`` > 1) take turns here;
    otherwise one thread's seed could be consumed by another's layers."""
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(features, out_channels)
    if encoder_state is not None:
        load_encoder_into_unet(unet, encoder_state)
    return unet.to(device)


# finetune.loss: the weight of the Dice term next to cross-entropy (0: cross-entropy alone,
# as the references fine-tune).
SEGMENTATION_LOSSES = {"dice_ce": 1.0, "ce": 0.0}


def segmentation_loss(name: str = "dice_ce") -> torch.nn.Module:
    """The fine-tuning loss on (B, C, H, W) logits and (B, 1, H, W) labels, a name of
    ``SEGMENTATION_LOSSES``: one MONAI DiceCELoss, so both read labels the same way."""
    if name not in SEGMENTATION_LOSSES:
        raise ValueError(f"unknown fine-tuning loss '{name}' "
                         f"(use {', '.join(SEGMENTATION_LOSSES)})")
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=SEGMENTATION_LOSSES[name])


class SegmentationTrainer:
    """Adam + ``loss`` (Dice-CE by default) on labeled slices augmented by ``augment``
    (``finetune.loss`` / ``finetune.augment``); keeps its optimiser state between calls so
    federated rounds continue where they stopped.

    The encoder's parameters are their own Adam group at ``lr * encoder_lr_scale`` and are
    frozen (no gradient, so no update) for the first ``encoder_warmup_steps`` steps: ways to
    protect a pre-trained encoder from the decoder's first, random gradients. Adam updates
    each parameter on its own, so the defaults (1.0, 0) give a plain single-group Adam's numbers.
    """

    def __init__(self, unet: torch.nn.Module, labeled: SliceSet, batch_size: int, lr: float,
                 generator: torch.Generator, amp: str = "fp32", cosine_steps: int = 0,
                 encoder_lr_scale: float = 1.0, encoder_warmup_steps: int = 0,
                 loss: str = "dice_ce", augment: str = "standard"):
        if len(labeled) == 0:
            raise ValueError("no labeled slices to fine-tune on")
        self.unet, self.labeled, self.batch_size, self.gen = unet, labeled, batch_size, generator
        self.amp = amp
        self.encoder_params, decoder_params = encoder_and_decoder_parameters(unet)
        self.optimizer = torch.optim.Adam([
            {"params": self.encoder_params, "lr": lr * encoder_lr_scale},
            {"params": decoder_params}], lr=lr)
        self.encoder_warmup_steps = encoder_warmup_steps
        self.steps_done = 0   # across calls: federated rounds count toward the warm-up
        # cosine_steps > 0: both groups' rates decay to 0 over that many steps (across federated
        # rounds too, since the trainer lives on between them; the warm-up steps count); 0: constant.
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cosine_steps)
                          if cosine_steps > 0 else None)
        self.loss_fn = segmentation_loss(loss)
        self.augment = augment
        # FedProx: the round's proximal term (fcl_ray/methods/proximal.py); None: FedAvg.
        self.proximal: Optional[Callable[[], torch.Tensor]] = None

    def train(self, steps: int) -> float:
        """Run ``steps`` optimiser steps; return the mean loss."""
        self.unet.train()
        device = self.labeled.images.device
        total = 0.0
        for _ in range(steps):
            if self.encoder_warmup_steps:
                frozen = self.steps_done < self.encoder_warmup_steps
                for param in self.encoder_params:
                    param.requires_grad_(not frozen)
            idx = torch.randint(len(self.labeled), (self.batch_size,), generator=self.gen)
            idx = idx.to(device)
            x, y = segmentation_augment(self.labeled.images[idx], self.labeled.labels[idx],
                                        self.gen, self.augment)
            with autocast(device, self.amp):
                loss = self.loss_fn(self.unet(x).float(), y[:, None])
            self.optimizer.zero_grad(set_to_none=True)
            (loss if self.proximal is None else loss + self.proximal()).backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.steps_done += 1
            total += loss.item()
        return total / steps


def snapshot(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the network's weights (the live tensors go on changing)."""
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def train_to_convergence(trainer: SegmentationTrainer, score: Callable[[], float],
                         eval_every: int, patience: int, max_steps: int) -> dict:
    """Train until ``score()`` (validation Dice of ``trainer.unet``) has not improved for
    ``patience`` evaluations, one every ``eval_every`` steps, or until ``max_steps``; then
    restore the best weights. Returns steps run, best step, its score and the mean loss."""
    stopper = EarlyStopping(patience)
    best_state, done, loss_sum = snapshot(trainer.unet), 0, 0.0
    for step in evaluation_steps(max_steps, eval_every):
        loss_sum += trainer.train(step - done) * (step - done)
        done = step
        if stopper.update(score(), done):
            best_state = snapshot(trainer.unet)
        if stopper.should_stop:
            break
    trainer.unet.load_state_dict(best_state)
    return {**stopper.summary(done), "train_loss": loss_sum / done}
