"""Is a self-supervised representation healthy or collapsed? Pure PyTorch, no Ray.

Contrastive and clustering methods can lower their loss by mapping every input to (nearly)
one point, or onto a few directions. Dice after fine-tuning hides this for a long time (the
decoder learns anyway), so every pre-training round measures, on a batch of the client's own
slices (see below for which):

- ``mean_cosine``: mean pairwise cosine of the L2-normalised embeddings, off the diagonal.
  About 0 to 0.5 is healthy for a partition-structured representation; 1.0 means every
  slice maps to one point.
- ``dim_std``: mean over dimensions of the std of the normalised embeddings (SimSiam's
  collapse indicator): about 1/sqrt(d) when the embeddings spread over the sphere, 0 when
  collapsed.
- ``effective_rank``: exp of the entropy of the normalised singular values of the centred
  embeddings (Roy & Vetterli 2007): how many directions the batch really uses (1 = a line).
- ``live_units``: fraction of the head's hidden ReLU units that fire for at least one probe
  slice (dead units never come back).
- ``partition_gap``: mean same-partition cosine minus mean other-partition cosine: does the
  representation know base from apex (the signal FCL learns from)?

:func:`is_collapsed` turns these into one verdict with documented thresholds
(``pretrain.collapse_cosine`` and ``pretrain.collapse_rank``).

Where the figures are read (``pretrain.health_source``): ``probe``, a forward pass of its own
over the fixed probe batch, or ``steps``, the encoder features the round's last training step
computed anyway, through the projection head alone. Both run the head in eval mode (BatchNorm
on its running statistics): in training mode batch statistics re-spread the hidden units of
every batch, so a collapsing network reads healthy there. And ``steps`` reads one step, not
the round's steps pooled: a collapsed network's single point moves from step to step, so
embeddings pooled over weights of several steps read spread (measured in
``experiments/health_source_check.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

HEALTH_KEYS = ("mean_cosine", "dim_std", "effective_rank", "live_units", "partition_gap")


def effective_rank(embeddings: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred (N, d) matrix."""
    centred = embeddings - embeddings.mean(0, keepdim=True)
    s = torch.linalg.svdvals(centred.float())
    if s.sum() <= 1e-12:
        return 1.0                       # every row identical: a single point
    p = s / s.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))


def representation_health(embeddings: torch.Tensor, partitions: torch.Tensor,
                          hidden: Optional[torch.Tensor] = None) -> dict[str, float]:
    """The health figures of one batch of embeddings.

    embeddings: (N, d) outputs of the method's head (normalised here again, harmlessly);
    partitions: (N,) partition of each slice; hidden: (N, h) post-ReLU activations of the
    head's hidden layer, or None when the method has no such layer (live_units is then NaN).
    """
    z = F.normalize(embeddings.detach().float(), dim=1)
    n = len(z)
    off = ~torch.eye(n, dtype=torch.bool, device=z.device)
    sim = z @ z.T
    same = partitions[:, None] == partitions[None, :]
    within, across = sim[same & off], sim[~same]
    gap = (within.mean() - across.mean()).item() if len(within) and len(across) else float("nan")
    live = (float((hidden.detach() > 0).any(0).float().mean()) if hidden is not None
            else float("nan"))
    return {"mean_cosine": float(sim[off].mean()) if n > 1 else 1.0,
            "dim_std": float(z.std(0).mean()) if n > 1 else 0.0,
            "effective_rank": effective_rank(z),
            "live_units": live,
            "partition_gap": gap}


def is_collapsed(health: dict[str, float], max_cosine: float, min_rank: float) -> bool:
    """Collapsed: the embeddings (nearly) coincide (mean cosine above ``max_cosine``) or
    span fewer than ``min_rank`` effective directions."""
    return health["mean_cosine"] > max_cosine or health["effective_rank"] < min_rank


def first_relu(module: nn.Module) -> Optional[nn.Module]:
    """The first ReLU inside ``module`` (the head's hidden layer), if any."""
    return next((m for m in module.modules() if isinstance(m, nn.ReLU)), None)


# Slices per forward pass of the probe. The probe runs in eval mode (BatchNorm on its running
# statistics), so the result does not depend on the chunk; a smaller one lowers the actor's
# peak memory (the activations of 64 slices at once were its largest allocation in a round).
PROBE_CHUNK = 16


@torch.no_grad()
def probe_embeddings(net: nn.Module, head: Optional[nn.Module], images: torch.Tensor,
                     chunk: int = PROBE_CHUNK) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Run ``net`` on ``images`` (``chunk`` at a time); also capture the output of
    ``head``'s first ReLU.

    A forward hook (removed afterwards) reads the hidden layer without any method having to
    expose it; ``inplace`` ReLUs are fine since the hook sees their output.
    """
    captured: list[torch.Tensor] = []
    relu = first_relu(head) if head is not None else None
    handle = relu.register_forward_hook(lambda m, i, out: captured.append(out.detach().clone())) \
        if relu is not None else None
    was_training = net.training
    net.eval()
    try:
        out = torch.cat([net(images[start:start + chunk])
                         for start in range(0, len(images), chunk)])
    finally:
        net.train(was_training)
        if handle is not None:
            handle.remove()
    return out, (torch.cat(captured).flatten(1) if captured else None)


def network_health(net: nn.Module, head: Optional[nn.Module], inputs: torch.Tensor,
                   partitions: torch.Tensor, centred: bool = False) -> dict[str, float]:
    """The figures of :func:`representation_health` for ``net`` run on ``inputs`` in eval
    mode (:func:`probe_embeddings`); ``centred``: mean-centre the embeddings first."""
    z, hidden = probe_embeddings(net, head, inputs)
    if centred:
        z = z - z.mean(0, keepdim=True)
    return representation_health(z, partitions, hidden)
