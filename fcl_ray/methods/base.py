"""The small interface every pre-training method implements, plus shared helpers."""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from fcl_ray.methods.augment import contrastive_view
from fcl_ray.methods.bank import FeatureBank, sample_features
from fcl_ray.config import Config
from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.health import network_health
from fcl_ray.methods.models import EmbeddingNet, autocast
from fcl_ray.methods.schedules import momentum_at
from fcl_ray.privacy.mechanism import (add_noise, choose_units, embed_rows, noise_std,
                                       planned_release, units_of)

Features = tuple[torch.Tensor, torch.Tensor]  # (M, d) embeddings, (M,) partition labels


class PretrainMethod:
    """One self-supervised method at one client; plain PyTorch, no Ray.

    The federation calls, each round: ``load_shared_state`` (global weights), then
    ``start_round`` (which round this is), ``train_round`` (local steps, given the other
    clients' features when the method uses them), then ``shared_state`` / ``shared_features`` to send back, and ``health`` (is the
    representation collapsing?).

    A method writes :meth:`compute_loss`; the optimiser step (zero_grad, backward outside
    autocast, step) is done once, here, for all of them. A method whose ``self.net`` is an
    encoder + projection head computes its queries with :meth:`embed`, so that
    ``pretrain.health_source=steps`` can read health from them instead of the probe batch.
    """

    federated: bool = True          # False: weights stay local (e.g. Local CL)
    shares_features: bool = False   # True: sends features to the coordinator each round
    probe_size: int = 64            # slices of the fixed health-probe batch
    health_centred: bool = False    # True: health figures on mean-centred embeddings
    # False: the step has no query batch the probe's figures could be read from (e.g. a
    # classifier fed rotated images); health then runs the probe whatever health_source says.
    health_from_steps: bool = True
    optimizer: torch.optim.Optimizer
    # What --resume restores: the attributes whose values shape future steps (networks,
    # optimiser, banks, queues, the random generator). Declared, not discovered, so nothing
    # drops out silently: a subclass that adds state adds its name, and
    # tests/unit/test_checkpoint.py fails for any state that changes in a round yet is
    # neither here nor in ``not_checkpointed`` (diagnostics that never shape a step).
    checkpointed: tuple[str, ...] = ("gen",)
    # ``proximal`` is set again from the global weights at every round's start.
    not_checkpointed: tuple[str, ...] = ("step_features", "proximal")

    def __init__(self, cfg: Config, slices: SliceSet, generator: torch.Generator,
                 device: torch.device):
        self.cfg, self.slices, self.gen, self.device = cfg, slices, generator, device
        # A fixed, evenly spread set of this client's slices for the health figures
        # (deterministic, no augmentation, drawn without touching the generator).
        self.probe_index = torch.linspace(0, len(slices) - 1,
                                          min(self.probe_size, len(slices))).long()
        # health_source=steps: :meth:`embed` keeps the last step's query features here;
        # with probe nothing is kept and every step runs as before, bit for bit.
        self.keep_step_features = (cfg.pretrain.health_source == "steps"
                                   and self.health_from_steps)
        self.step_features: Optional[Features] = None   # (B, C, h, w) encoder maps, (B,) partitions
        # FedProx: the round's proximal term (fcl_ray/methods/proximal.py); None: FedAvg.
        self.proximal: Optional[Callable[[], torch.Tensor]] = None

    # --- what subclasses provide
    def networks(self) -> dict[str, nn.Module]:
        """The modules whose weights are averaged across clients."""
        raise NotImplementedError

    def encoder(self) -> nn.Module:
        """The encoder that initialises the U-Net for fine-tuning."""
        raise NotImplementedError

    def compute_loss(self, remote: Optional[Features]) -> tuple[torch.Tensor, dict[str, float]]:
        """One batch: the loss to minimise and any extra scalar metrics."""
        raise NotImplementedError

    def embedding(self) -> tuple[nn.Module, Optional[nn.Module]]:
        """The module whose outputs the health figures read, and the head whose first ReLU
        counts as the hidden layer (default: the encoder + projection head ``self.net``)."""
        return self.net, self.net.head

    def shared_features(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Features (and partition labels) to send to the other clients, or None."""
        return None

    # --- shared behaviour
    def start_round(self, round_index: int) -> None:
        """The federation's round ``round_index`` (1-based) is about to run. Methods with a
        step-dependent schedule place it here; the default has none."""

    def view(self, x: torch.Tensor, flips: bool = True) -> torch.Tensor:
        """A random contrastive view of a batch (``pretrain.views``)."""
        return contrastive_view(x, self.gen, self.cfg.pretrain.views, flips)

    def train_step(self, remote: Optional[Features]) -> dict[str, float]:
        """One optimiser step: forward under autocast, backward and step outside it. With
        :attr:`proximal` (FedProx) its term joins the loss that is minimised; ``loss``
        reports the method's own loss, comparable across strategies."""
        with autocast(self.device, self.cfg.model.amp):
            loss, metrics = self.compute_loss(remote)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.proximal is None else loss + self.proximal()).backward()
        self.optimizer.step()
        return {"loss": loss.item(), **metrics}

    def embed(self, views: torch.Tensor, partitions: torch.Tensor) -> torch.Tensor:
        """``self.net(views)`` (encoder + projection head), the step's queries. Its first
        ``len(partitions)`` rows are the batch's slices, with these partitions; with
        ``pretrain.health_source=steps`` their encoder features are kept (detached) for
        :meth:`health`, which then needs no forward pass of the encoder."""
        if not self.keep_step_features:
            return self.net(views)
        features = self.net.encoder(views)           # the same two calls as self.net(views)
        n = len(partitions)
        self.step_features = (features[:n].detach().float(), partitions.to(features.device))
        return self.net.head(features)

    def train_round(self, steps: int, remote: Optional[Features]) -> dict[str, float]:
        """Run ``steps`` local steps and return the mean of each metric."""
        totals: dict[str, float] = {}
        self.step_features = None                    # health reads this round's, or the probe
        for _ in range(steps):
            metrics = self.train_step(remote)
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
        return {k: v / steps for k, v in totals.items()}

    def health(self) -> dict[str, float]:
        """Representation health (see :mod:`fcl_ray.methods.health`). With
        ``pretrain.health_source=steps``: the projection head (eval mode) on the encoder
        features of the round's last query batch. With ``probe``, for a method whose step
        has no such batch, or before any step: :meth:`probe_health`."""
        if self.step_features is not None:
            features, partitions = self.step_features
            head = self.net.head
            return network_health(head, head, features, partitions, self.health_centred)
        return self.probe_health()

    def probe_health(self) -> dict[str, float]:
        """Representation health from a forward pass over the fixed probe batch."""
        net, head = self.embedding()
        idx = self.probe_index.to(self.slices.images.device)
        return network_health(net, head, self.slices.images[idx], self.slices.partition[idx],
                              self.health_centred)

    def shared_state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, net in self.networks().items()
                for k, v in net.state_dict().items()}

    def load_shared_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, net in self.networks().items():
            prefix = f"{name}."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                 if k.startswith(prefix)})

    def checkpoint_state(self) -> dict:
        """Everything that shapes this client's future steps: the attributes named in
        ``checkpointed``, as tensors and plain values only (so the file loads with
        ``weights_only=True``). A snapshot, not live views; resuming from it continues bit
        for bit on CPU."""
        return {name: _snapshot(getattr(self, name), name) for name in self.checkpointed}

    def load_checkpoint_state(self, state: dict) -> None:
        missing = [name for name in self.checkpointed if name not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}: the checkpoint has no {missing} "
                             f"(written by another method?)")
        for name in self.checkpointed:
            setattr(self, name, _restore(getattr(self, name), state[name]))

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.encoder().state_dict().items()}


def _snapshot(value, name: str):
    """A copy of one checkpointed attribute as tensors and plain values."""
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, (nn.Module, torch.optim.Optimizer, FeatureBank)):
        return copy.deepcopy(value.state_dict())
    if torch.is_tensor(value):
        return value.detach().clone()
    raise TypeError(f"checkpointed attribute '{name}' is a {type(value).__name__}; "
                    f"expected a module, optimiser, feature bank, tensor or generator")


def _restore(current, saved):
    """``current`` with the state ``saved`` by :func:`_snapshot` (tensors replace it, as a
    copy: training updates some in place, and ``saved`` must stay what was saved)."""
    if isinstance(current, torch.Generator):
        current.set_state(saved)
    elif isinstance(current, (nn.Module, torch.optim.Optimizer, FeatureBank)):
        current.load_state_dict(saved)
    else:
        return saved.to(current.device, copy=True)
    return current


def bank_capacity(cfg: Config, n_slices: int) -> int:
    """``pretrain.bank_size``, or for ``auto`` about the slices per partition this client
    holds (at least 8): a larger bank mostly recycles copies of the same few slices."""
    size = cfg.pretrain.bank_size
    if size == "auto":
        return max(8, -(-n_slices // cfg.data.partitions))
    return size


class PartitionBatchSampler:
    """Batches of m volumes x one random slice per partition (Chaitanya et al.'s G^D batch).

    ``by="volume"``: m distinct volumes; two frames (ED, ES, extra cine frames) of one patient
    can then meet in a batch as "other volumes". ``by="patient"``: m distinct patients and one
    random frame of each (``pretrain.batch_by``). Either way, when m exceeds the volumes or
    patients there are, they are drawn with replacement. A patient with a single frame costs
    no draw, so on data with one frame per patient both give the same batches.
    """

    def __init__(self, slices: SliceSet, partitions: int, by: str = "volume"):
        if by not in ("volume", "patient"):
            raise ValueError(f"unknown batch unit {by!r}; allowed: volume, patient")
        self.partitions = partitions
        self.table: list[list[torch.Tensor]] = []   # per volume, per partition: slice indices
        groups: dict[int, list[int]] = {}           # the unit drawn -> its volumes (table rows)
        by_patient = by == "patient" and slices.patient is not None
        for row, v in enumerate(slices.volume.unique().tolist()):
            in_volume = slices.volume == v
            self.table.append([torch.nonzero(in_volume & (slices.partition == p)).flatten()
                               for p in range(partitions)])
            unit = int(slices.patient[in_volume][0]) if by_patient else row
            groups.setdefault(unit, []).append(row)
        self.units = list(groups.values())

    def sample(self, volumes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Slice indices (m*S,) and their partitions (m*S,)."""
        n = len(self.units)
        chosen = (torch.randperm(n, generator=gen)[:volumes] if volumes <= n
                  else torch.randint(n, (volumes,), generator=gen))
        idx, parts = [], []
        for unit in chosen.tolist():
            frames = self.units[unit]   # one frame: no draw (volume mode is today's, bit for bit)
            v = frames[0] if len(frames) == 1 else \
                frames[int(torch.randint(len(frames), (1,), generator=gen))]
            for p, candidates in enumerate(self.table[v]):
                if len(candidates):
                    idx.append(candidates[torch.randint(len(candidates), (1,), generator=gen)])
                    parts.append(p)
        return torch.cat(idx), torch.tensor(parts, dtype=torch.long)


class SingleNetworkMethod(PretrainMethod):
    """A method with one trained network (encoder + a head), Adam, and G^D batches.

    Subclasses pick the network with :meth:`build_net` (default: encoder + projection head)
    and write ``compute_loss``; FedAvg shares the whole network, the encoder initialises
    fine-tuning.
    """

    checkpointed = PretrainMethod.checkpointed + ("net", "optimizer")

    def __init__(self, cfg: Config, slices: SliceSet, generator: torch.Generator,
                 device: torch.device):
        super().__init__(cfg, slices, generator, device)
        self.net = self.build_net().to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.pretrain.lr)
        self.sampler = PartitionBatchSampler(slices, cfg.data.partitions, cfg.pretrain.batch_by)

    def build_net(self) -> nn.Module:
        m = self.cfg.model
        return EmbeddingNet(m.features, m.projection_hidden, m.projection_dim, m.head_norm)

    def networks(self) -> dict[str, nn.Module]:
        return {"main": self.net}

    def encoder(self) -> nn.Module:
        return self.net.encoder


class MomentumBankMethod(PretrainMethod):
    """Main encoder + head, its momentum (EMA) copy, and a per-partition bank of momentum
    features, filled at start so the dictionary is never empty (FCL and FedCA).

    FedAvg shares the main network, and the momentum network too when
    ``pretrain.aggregate_momentum`` is true (every client's bank then comes from the same
    global momentum network); otherwise each client keeps its own.
    """

    checkpointed = PretrainMethod.checkpointed + ("net", "momentum_net", "optimizer", "bank",
                                                  "momentum_step")

    def __init__(self, cfg: Config, slices: SliceSet, generator: torch.Generator,
                 device: torch.device):
        super().__init__(cfg, slices, generator, device)
        p, m = cfg.pretrain, cfg.model
        self.net = EmbeddingNet(m.features, m.projection_hidden, m.projection_dim, m.head_norm).to(device)
        self.momentum_net = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=p.lr)
        self.bank = FeatureBank(cfg.data.partitions, bank_capacity(cfg, len(slices)),
                                m.projection_dim, device)
        self.sampler = PartitionBatchSampler(slices, cfg.data.partitions, cfg.pretrain.batch_by)
        # Position in pretrain.momentum_schedule: momentum updates done, over the federation's
        # rounds (start_round sets it from the round, so it survives resume and restarts).
        self.momentum_step = torch.zeros((), dtype=torch.long)
        if cfg.pretrain.bank_start == "filled":
            self._fill_bank()
        # privacy.*: what each round releases (None: the bank sample, as without privacy).
        self.release = private_release(cfg, slices) if self.shares_features else None

    def networks(self) -> dict[str, nn.Module]:
        nets = {"main": self.net}
        if self.cfg.pretrain.aggregate_momentum:
            nets["momentum"] = self.momentum_net
        return nets

    def encoder(self) -> nn.Module:
        return self.net.encoder

    @torch.no_grad()
    def _fill_bank(self, chunk: int = 64) -> None:
        """Start with a full local bank so the sampled dictionary is never empty."""
        for start in range(0, len(self.slices), chunk):
            x = self.slices.images[start:start + chunk]
            self.bank.push(self.momentum_net(self.view(x)),
                           self.slices.partition[start:start + chunk],
                           torch.arange(start, min(start + chunk, len(self.slices))))

    def start_round(self, round_index: int) -> None:
        """Place the momentum schedule at the round's first step, (round - 1) x local_steps:
        a client that sat rounds out, was restarted or resumed is where the others are (and
        with pretrain.aggregate_momentum every client's momentum network moves alike)."""
        self.momentum_step.fill_((round_index - 1) * self.cfg.pretrain.local_steps)

    def load_checkpoint_state(self, state: dict) -> None:
        # A file written before the momentum schedule existed has no position; the next
        # round's start_round sets it from the round anyway, so such a file still resumes.
        super().load_checkpoint_state({"momentum_step": self.momentum_step.clone(), **state})

    @torch.no_grad()
    def _momentum_update(self) -> None:
        p = self.cfg.pretrain
        mom = momentum_at(int(self.momentum_step), p.rounds * p.local_steps, p.momentum,
                          p.momentum_end, p.momentum_schedule)
        for main, ema in zip(self.net.parameters(), self.momentum_net.parameters()):
            ema.mul_(mom).add_(main.detach(), alpha=1.0 - mom)
        self.momentum_step += 1

    def _bank_sample_to_share(self) -> tuple[np.ndarray, np.ndarray]:
        """A random subset of the bank (the paper's K sampling), optionally blurred by
        Gaussian noise (``pretrain.feature_noise``, unaccounted) before it leaves the site;
        with ``privacy.*`` set, the accounted release of :meth:`_private_sample_to_share`."""
        if self.release is not None:
            return self._private_sample_to_share()
        p = self.cfg.pretrain
        feats, parts = sample_features(*self.bank.contents(), p.exchange_size, self.gen)
        feats = add_noise(feats, p.feature_noise, self.gen)
        return feats.cpu().numpy().astype(np.float32), parts.cpu().numpy().astype(np.int16)

    def _private_sample_to_share(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian mechanism of :mod:`fcl_ray.privacy.mechanism`, here at the site: the
        round's units drawn without replacement from the pool, one row per chosen slice from
        the momentum network (eval mode, no augmentation), noise, re-normalised."""
        pr = self.cfg.privacy
        per_unit = 1 if pr.unit == "slice" else pr.rows_per_patient
        units = units_of(pr.unit, len(self.slices), self.slices.patient)
        idx = choose_units(units, self.release.sampled, per_unit, self.gen)
        rows = embed_rows(self.momentum_net, self.slices.images[idx.to(self.device)])
        rows = add_noise(rows, noise_std(self.release.noise_multiplier, pr.unit,
                                         pr.rows_per_patient), self.gen)
        return (rows.cpu().numpy().astype(np.float32),
                self.slices.partition[idx.to(self.slices.partition.device)].cpu().numpy()
                .astype(np.int16))


def private_release(cfg: Config, slices: SliceSet):
    """The round release of ``privacy.*`` for a site holding ``slices`` (its noise
    multiplier given, or calibrated from ``privacy.feature_epsilon`` over
    ``pretrain.rounds`` rounds for this site's own pool), or None with privacy off."""
    pr = cfg.privacy
    if not pr.enabled:
        return None
    planned = planned_release(pr.unit, len(slices), slices.patient, cfg.pretrain.exchange_size,
                              pr.rows_per_patient, pr.feature_noise_multiplier or 0.0)
    if pr.feature_epsilon is None:
        return planned
    from fcl_ray.privacy.accountant import calibrate_noise_multiplier

    z = calibrate_noise_multiplier(pr.feature_epsilon, pr.delta, cfg.pretrain.rounds,
                                   planned.population, planned.sampled)
    return dataclasses.replace(planned, noise_multiplier=z)
