"""What the exchanged features reveal, measured: an honest-but-curious coordinator's attack.

The coordinator holds the global encoder (FedAvg sends it every round) and the rows a site
shares (:mod:`fcl_ray.privacy.mechanism`), and knows the configured noise. On auxiliary
patients it may lawfully have (other phantom sites, drawn from another seed, as the positive
control's, :func:`fcl_ray.methods.control.control_slices`), it

- trains an *inversion decoder* from (noised) rows back to slices, then reconstructs the
  target site's slices from that site's noised rows: SSIM and PSNR against the true slices,
  and the Dice of the heart that a segmenter (trained on the auxiliary patients) finds in
  each reconstruction, against the true mask;
- runs a *membership* test (:mod:`fcl_ray.privacy.membership`): over the rounds' releases, a
  patient scores the highest cosine between one of its slices' rows and any released row;
  members (the site's pre-training pool) against non-members: its test-fold patients and, on
  the phantom, ``heldout`` more patients of the same site that no run trains on
  (:func:`fcl_ray.data.heldout_volumes`). AUC and TPR at a low FPR, with bootstrap CIs over
  patients, and the counts they rest on. Every patient is scored on its frames with masks
  (``data.phases``) only: test-fold patients have no others (the split leaves their extra
  frames out), and a score that is a maximum over more slices would be higher for that
  reason alone.

The baseline, sharing nothing: the auxiliary patients' mean slice of each partition (the
partition labels are shared in the clear) as the reconstruction, and a constant membership
score (AUC 0.5, TPR = FPR). Pure functions over tensors (torch + MONAI, no Ray), then
:func:`run_audit`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch
from monai.metrics import DiceMetric, PSNRMetric, SSIMMetric
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.models import EmbeddingNet
from fcl_ray.privacy.mechanism import (add_noise, choose_units, embed_rows, noise_std,
                                       planned_release, units_of)
from fcl_ray.privacy.membership import (coarse_note, describe, membership_figures,
                                        membership_scores)

BASELINE = "share nothing"


class InversionDecoder(nn.Module):
    """A row (d,) -> a slice (1, S, S) in [0, 1]: a linear map to a small grid of ``width``
    channels (S / 2^k, the smallest of at least 3 pixels: 4 for 32 or 64 px, 3 for 48 px),
    then k 2x transposed-convolution upsamplings (MONAI blocks) to S x S."""

    def __init__(self, dim: int, image_size: int, width: int = 64):
        super().__init__()
        ups = 0
        while image_size % 2 ** (ups + 1) == 0 and image_size // 2 ** (ups + 1) >= 3:
            ups += 1
        self.width, self.base = width, image_size // 2 ** ups
        self.project = nn.Linear(dim, width * self.base ** 2)
        blocks, ch = [], width
        for _ in range(ups):
            out = max(8, ch // 2)
            blocks += [UpSample(2, ch, out, scale_factor=2, mode="deconv"),
                       Convolution(2, out, out, act="PRELU", norm="INSTANCE")]
            ch = out
        blocks.append(Convolution(2, ch, 1, kernel_size=1, conv_only=True))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.project(rows).view(len(rows), self.width, self.base, self.base)
        return torch.sigmoid(self.blocks(x))


def train_inversion(rows: torch.Tensor, images: torch.Tensor, std: float, steps: int,
                    generator: torch.Generator, batch_size: int = 32,
                    lr: float = 2e-3) -> InversionDecoder:
    """A decoder from rows (clean, (N, d)) of ``images`` (N, 1, S, S) to the images, trained
    on rows noised as the site noises them (fresh noise of ``std`` every step: the attacker
    knows the configured multiplier). Mean squared error, Adam. The initial weights come from
    ``generator``'s seed (torch's global generator is seeded at random in every process, so
    the audit's figures would differ from one invocation to the next)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator.initial_seed())
        decoder = InversionDecoder(rows.shape[1], images.shape[-1])
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(rows), (min(batch_size, len(rows)),), generator=generator)
        loss = nn.functional.mse_loss(decoder(add_noise(rows[idx], std, generator)), images[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return decoder.eval()


@torch.no_grad()
def reconstruct(decoder: InversionDecoder, rows: torch.Tensor) -> torch.Tensor:
    return decoder(rows)


def partition_means(images: torch.Tensor, partitions: torch.Tensor,
                    wanted: torch.Tensor) -> torch.Tensor:
    """The baseline reconstruction: for each of ``wanted`` partitions, the mean of the
    ``images`` of that partition (all images' mean where a partition has none)."""
    overall = images.mean(0)
    means = {int(p): images[partitions == p].mean(0) for p in partitions.unique()}
    return torch.stack([means.get(int(p), overall) for p in wanted])


def image_quality(reconstructed: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and PSNR (MONAI, intensities in [0, 1]) over the slices."""
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)(reconstructed, truth)
    psnr = PSNRMetric(max_val=1.0)(reconstructed.clamp(0, 1), truth)
    return {"ssim": float(ssim.mean()), "psnr": float(psnr[torch.isfinite(psnr)].mean())}


def heart_dice(segmenter: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Dice of the heart (every non-background label) that ``segmenter`` finds in
    ``images``, against ``labels``, over all slices together (one number)."""
    from fcl_ray.methods.evaluate import predict_slices

    predicted = (predict_slices(segmenter, images) > 0).float()
    truth = (labels > 0).float()
    metric = DiceMetric(include_background=True, reduction="mean", ignore_empty=False)
    return float(metric(predicted[None, None], truth[None, None]).mean())


def train_segmenter(aux: SliceSet, features: list[int], steps: int, seed: int) -> nn.Module:
    """A U-Net trained with labels on the auxiliary slices (the fine-tuning trainer)."""
    from fcl_ray.methods.finetune import SegmentationTrainer, init_unet

    unet = init_unet(features, None, seed=seed, device=torch.device("cpu"))
    SegmentationTrainer(unet, aux, 8, 1e-3, torch.Generator().manual_seed(seed)).train(steps)
    return unet.eval()


def released_rows(rows: torch.Tensor, units: list[torch.Tensor], sampled: int,
                  rows_per_unit: int, std: float, rounds: int,
                  generator: torch.Generator) -> torch.Tensor:
    """What a site releases over ``rounds`` rounds, as the mechanism draws it, from its
    pool's precomputed clean ``rows``."""
    picked = [add_noise(rows[choose_units(units, sampled, rows_per_unit, generator)], std,
                        generator) for _ in range(rounds)]
    return torch.cat(picked)


@dataclass
class AuditData:
    """The attacker's auxiliary slices and the target site's pool and non-members."""
    aux: SliceSet
    pool: SliceSet        # the target site's pre-training pool: what its rows come from
    members: SliceSet     # the pool's frames with masks: the slices members are scored on
    outsiders: SliceSet   # its test-fold patients (frames with masks): never in the pool
    heldout: Optional[SliceSet] = None   # phantom only: more of its patients (frames with
    #                                      masks), never trained on

    def nonmember_sets(self) -> list[SliceSet]:
        return [self.outsiders] + ([self.heldout] if self.heldout is not None else [])


def audit_data(cfg, client: int = 0, fold: int = 0, heldout: int = 0) -> AuditData:
    """Auxiliary slices (:func:`~fcl_ray.methods.control.control_slices`), the target
    site's pool and test-fold patients, split as the site splits them, and on the phantom
    ``heldout`` more of the site's patients (:func:`~fcl_ray.data.heldout_volumes`; their
    frames with masks)."""
    from fcl_ray.data import heldout_volumes, load_client_volumes
    from fcl_ray.data.split import patient_split
    from fcl_ray.methods.control import control_slices

    volumes = load_client_volumes(cfg, client)
    site = _site_slices(cfg, volumes)
    split = patient_split([v.volume_id for v in volumes], [v.label is not None for v in volumes],
                          cfg.data.folds, fold, 0, cfg.experiment.seed, client)
    masked = [i for i in split.train if volumes[i].label is not None]
    # only frames with masks are scored: render no extra frames (each frame is drawn alone)
    ed_es = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, extra_frames=0))
    extra = (_site_slices(cfg, [v for v in heldout_volumes(ed_es, client, heldout)
                                if v.label is not None]) if heldout else None)
    return AuditData(control_slices(_phantom(cfg)), site.select_volumes(split.train),
                     site.select_volumes(masked), site.select_volumes(split.test), extra)


def _site_slices(cfg, volumes) -> SliceSet:
    """A site's volumes sliced and normalised as the site does, tagged by patient."""
    from fcl_ray.data import patient_of
    from fcl_ray.data.slices import volumes_to_slices

    return volumes_to_slices([v.image for v in volumes], [v.label for v in volumes],
                             cfg.data.partitions, normalise=cfg.data.normalise,
                             patients=[patient_of(v.volume_id) for v in volumes])


def _phantom(cfg):
    """``cfg`` itself on the phantom; for data on disk, the phantom at the same image size and
    partitions (the control's loader would otherwise read the target's own dataset)."""
    if cfg.data.kind == "synthetic":
        return cfg
    data = dataclasses.replace(cfg.data, kind="synthetic", root=None, client_roots=[],
                               split="random", site_skew=None, phases="ed", extra_frames=0)
    return dataclasses.replace(cfg, data=data)


def release_network(cfg, state: Optional[dict], seed: int) -> EmbeddingNet:
    """The network whose rows a site shares (encoder + projection head). ``state``: an
    encoder file's tensors (the head then starts from ``seed``: encoder files hold no head),
    a full encoder + head state (``encoder.*``, ``head.*``), a client checkpoint (its
    ``momentum_net``, the network that computes the shared rows), or None (random init)."""
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EmbeddingNet(m.features, m.projection_hidden, m.projection_dim, m.head_norm)
    if state is None:
        return net.eval()
    if "momentum_net" in state:
        state = state["momentum_net"]
    if any(k.startswith("client") for k in state):   # one encoder per client: the first
        state = state[sorted(state)[0]]
    if any(k.startswith("head.") for k in state):
        net.load_state_dict(state)
    else:
        net.encoder.load_state_dict(state)
    return net.eval()


def run_audit(cfg, multipliers: list[float], state: Optional[dict] = None, client: int = 0,
              fold: int = 0, decoder_steps: int = 300, segmenter_steps: int = 200,
              log=lambda line: None, heldout: int = 0) -> list[dict]:
    """One row per noise multiplier, plus the baseline's: epsilon over pretrain.rounds
    rounds (for the target site's pool, privacy.delta), SSIM, PSNR, heart Dice of the
    reconstructions, and the membership figures
    (:func:`~fcl_ray.privacy.membership.membership_figures`: AUC, TPR at low FPRs, their
    CIs, p, and the counts of members and non-members)."""
    from fcl_ray.privacy.accountant import epsilon

    pr, seed = cfg.privacy, cfg.experiment.seed
    data = audit_data(cfg, client, fold, heldout)
    labeled = data.members    # the slices whose reconstruction is scored, too
    log(f"audit: {len(data.aux)} auxiliary slices; target client {client}: "
        f"{len(data.pool)} pool slices ({len(labeled)} with masks), "
        f"{len(data.outsiders)} test-fold slices, "
        f"{0 if data.heldout is None else len(data.heldout)} held-out slices")
    net = release_network(cfg, state, seed)
    aux_rows = embed_rows(net, data.aux.images)
    pool_rows, member_rows = embed_rows(net, data.pool.images), embed_rows(net, labeled.images)
    nonmembers = [(embed_rows(net, s.images), s.patient) for s in data.nonmember_sets()]
    segmenter = train_segmenter(data.aux, cfg.model.features, segmenter_steps, seed)
    per_unit = 1 if pr.unit == "slice" else pr.rows_per_patient
    units = units_of(pr.unit, len(data.pool), data.pool.patient)

    def membership(released: torch.Tensor) -> dict:
        inside = membership_scores(member_rows, labeled.patient, released)
        outside = [score for rows_, patients in nonmembers
                   for score in membership_scores(rows_, patients, released).values()]
        return membership_figures(list(inside.values()), outside)

    rows = []
    baseline = partition_means(data.aux.images, data.aux.partition, labeled.partition)
    no_release = torch.zeros(1, pool_rows.shape[1])   # nothing shared: every score equal
    rows.append({"multiplier": None, "setting": BASELINE, "epsilon": 0.0,
                 **image_quality(baseline, labeled.images),
                 "heart_dice": heart_dice(segmenter, baseline, labeled.labels),
                 **membership(no_release)})
    note = coarse_note(rows[0]["members"], rows[0]["nonmembers"])
    if note:
        log(f"audit: {note}")
    for z in multipliers:
        release = planned_release(pr.unit, len(data.pool), data.pool.patient,
                                  cfg.pretrain.exchange_size, pr.rows_per_patient, z)
        std = noise_std(z, pr.unit, pr.rows_per_patient)
        gen = torch.Generator().manual_seed(seed)
        decoder = train_inversion(aux_rows, data.aux.images, std, decoder_steps, gen)
        recon = reconstruct(decoder, add_noise(member_rows, std, gen))
        shared = released_rows(pool_rows, units, release.sampled, per_unit, std,
                               cfg.pretrain.rounds, gen)
        row = {"multiplier": z, "setting": f"noise multiplier {z:g}",
               "epsilon": epsilon({release: cfg.pretrain.rounds}, pr.delta),
               **image_quality(recon, labeled.images),
               "heart_dice": heart_dice(segmenter, recon, labeled.labels),
               **membership(shared)}
        log(f"audit: multiplier {z:g}: epsilon {row['epsilon']:.3g}, SSIM {row['ssim']:.3f}, "
            f"PSNR {row['psnr']:.2f}, heart Dice {row['heart_dice']:.3f}, {describe(row)}")
        rows.append(row)
    return rows
