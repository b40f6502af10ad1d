"""Supervised fine-tuning of the full U-Net on a client's few labeled volumes. No Ray."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from monai.losses import DiceCELoss

from fcl_ray.methods.augment import segmentation_augment
from fcl_ray.methods.early_stopping import EarlyStopping, evaluation_steps
from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.models import autocast, build_unet, load_encoder_into_unet


def init_unet(features, encoder_state: Optional[dict], seed: int,
              device: torch.device) -> torch.nn.Module:
    """A U-Net whose random part is drawn from ``seed`` (so pre-trained and random-init runs
    share the same decoder init) and whose encoder is ``encoder_state`` when given."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(features)
    if encoder_state is not None:
        load_encoder_into_unet(unet, encoder_state)
    return unet.to(device)


class SegmentationTrainer:
    """Adam + Dice-CE on augmented batches of labeled slices; keeps its optimiser state
    between calls so federated rounds continue where they stopped."""

    def __init__(self, unet: torch.nn.Module, labeled: SliceSet, batch_size: int, lr: float,
                 generator: torch.Generator, amp: str = "fp32", cosine_steps: int = 0):
        if len(labeled) == 0:
            raise ValueError("no labeled slices to fine-tune on")
        self.unet, self.labeled, self.batch_size, self.gen = unet, labeled, batch_size, generator
        self.amp = amp
        self.optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
        # cosine_steps > 0: the rate decays to 0 over that many steps (across federated rounds
        # too, since the trainer lives on between them); 0: constant.
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cosine_steps)
                          if cosine_steps > 0 else None)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def train(self, steps: int) -> float:
        """Run ``steps`` optimiser steps; return the mean loss."""
        self.unet.train()
        device = self.labeled.images.device
        total = 0.0
        for _ in range(steps):
            idx = torch.randint(len(self.labeled), (self.batch_size,), generator=self.gen)
            idx = idx.to(device)
            x, y = segmentation_augment(self.labeled.images[idx], self.labeled.labels[idx], self.gen)
            with autocast(device, self.amp):
                loss = self.loss_fn(self.unet(x).float(), y[:, None])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
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
