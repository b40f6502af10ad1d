"""A site: its own cases (cached as tensors), its models, its training. Plain Python.

:class:`ClientSite` runs inside a client actor (:mod:`fcl_ray.federation.actors`), which
imports this module, and with it torch and MONAI, only in the client's own process. Raw images
and masks are loaded here and never leave: methods return weights, shared features
(embeddings + partition labels) and scalar metrics only.
"""
from __future__ import annotations

from fcl_ray.federation import lean   # first: keeps MLflow, pandas... out of client actors

import dataclasses  # noqa: E402  (after lean, on purpose)
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Optional  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fcl_ray.protocol.weights import FlatWeights, WeightLayout  # noqa: E402
from fcl_ray.methods.bank import merge_remote  # noqa: E402
from fcl_ray.config_io import from_dict  # noqa: E402
from fcl_ray.data import load_client_volumes, patient_of  # noqa: E402
from fcl_ray.data.labels import class_names, network_outputs  # noqa: E402
from fcl_ray.data.slices import volumes_to_slices  # noqa: E402
from fcl_ray.data.split import patient_split  # noqa: E402
from fcl_ray.methods.evaluate import dice_per_volume, mean_dice, summarise_dice  # noqa: E402
from fcl_ray.methods.finetune import (SegmentationTrainer, init_unet,  # noqa: E402
                                      train_to_convergence)
from fcl_ray.protocol.messages import (ALL_LABELED, ClientNotReady, ClientUpdate,  # noqa: E402
                                       Contract, check_update, phase_contract)
from fcl_ray.methods.proximal import proximal_term  # noqa: E402
from fcl_ray.core import metrics as names  # noqa: E402
from fcl_ray.methods import get_method_class  # noqa: E402
from fcl_ray.methods import probes  # noqa: E402
from fcl_ray.methods.control import control_trainer, encoder_half  # noqa: E402
from fcl_ray.federation.process_memory import peak_resident_mb, resident_mb  # noqa: E402
from fcl_ray.machine import describe_machine  # noqa: E402


# What importing this module cost (torch, MONAI, ...): paid once per actor process.
IMPORT_SECONDS = time.perf_counter() - lean.IMPORT_START
RESIDENT_AFTER_IMPORTS_MB = resident_mb()


def method_config(cfg, method_name: str):
    """``cfg`` with ``pretrain.lr`` set to the method's own tuned rate, if it has one."""
    lr = cfg.pretrain.lr_per_method.get(method_name)
    if lr is None:
        return cfg
    return dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, lr=lr))


def pick_device(num_gpus: float) -> torch.device:
    """The GPU Ray assigned to this actor (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def state_to_numpy(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def state_from_numpy(state: Optional[dict]) -> Optional[dict[str, torch.Tensor]]:
    """Tensors from arrays (copied: object-store arrays are read-only) or from tensors."""
    return None if state is None else {k: torch.as_tensor(np.array(v)) for k, v in state.items()}


# The calls that set a client up for a phase: what a restarted client is rebuilt with.
SETUP_CALLS = ("start_pretraining", "start_federated_finetune")


class ClientSite:
    """One client of the federation: its shard, its method and fine-tuning (no Ray here; the
    :class:`~fcl_ray.federation.actors.ClientActor` shell runs it as an actor)."""

    def __init__(self, cfg_dict: dict, client_id: int, num_threads: int, num_gpus: float = 0.0):
        torch.set_num_threads(max(1, num_threads))   # one thread per CPU Ray gave us
        start = time.perf_counter()
        self.cfg = from_dict(cfg_dict)
        self.client_id = client_id
        self.device = pick_device(num_gpus)
        volumes = load_client_volumes(self.cfg, client_id)
        # What this site segments (its own dataset.json for Decathlon): the U-Net's outputs
        # and the Dice columns follow it.
        self.classes = class_names(self.cfg.data, client_id)
        self.n_outputs = network_outputs(self.classes)
        self.volume_ids = [v.volume_id for v in volumes]   # <case>:<frame>, several per patient
        self.has_label = [v.label is not None for v in volumes]   # extra cine frames: no mask
        self.slices = volumes_to_slices([v.image for v in volumes], [v.label for v in volumes],
                                        self.cfg.data.partitions,
                                        normalise=self.cfg.data.normalise,
                                        patients=[patient_of(v) for v in self.volume_ids]
                                        ).to(self.device)
        if self.cfg.model.channels_last:
            self.slices.images = self.slices.images.contiguous(memory_format=torch.channels_last)
        del volumes   # the slices are all we keep (the volumes were a second copy)
        self.method = None
        self.weights: Optional[FlatWeights] = None      # the method's shared networks
        self.trainer: Optional[SegmentationTrainer] = None
        self.ft_weights: Optional[FlatWeights] = None   # the federated fine-tuning U-Net
        self.validation = None   # its validation patients' slices (budget=converge)
        self.control: Optional[SegmentationTrainer] = None   # the positive control's U-Net
        self.contract: Optional[Contract] = None   # what this phase's updates may hold
        # Where this actor's time and memory went (fcl-ray bench prints it).
        self.profile = {"pid": os.getpid(), "import_seconds": IMPORT_SECONDS,
                        "rss_after_imports_mb": RESIDENT_AFTER_IMPORTS_MB,
                        "data_seconds": time.perf_counter() - start,
                        "rss_after_data_mb": resident_mb()}

    def _generator(self, *salt: int) -> torch.Generator:
        """A generator seeded from (experiment seed, client, salt): order-independent."""
        seed = int(np.random.SeedSequence([self.cfg.experiment.seed, self.client_id, *salt])
                   .generate_state(1)[0])
        return torch.Generator().manual_seed(seed)

    @property
    def _converge(self) -> bool:
        return self.cfg.finetune.budget == "converge"

    def _split(self, fold: int, n_labeled: int = 0, validating: bool = True):
        """Split by patient, so a patient's ED, ES and extra frames stay on one side; with
        ``finetune.budget=converge`` (and ``validating``) the last patients of the training
        order validate."""
        validates = self._converge and validating
        n_validation = self.cfg.finetune.validation_patients if validates else 0
        return patient_split(self.volume_ids, self.has_label, self.cfg.data.folds, fold, n_labeled,
                             self.cfg.experiment.seed, self.client_id, n_validation)

    def training_patients(self, fold: int) -> int:
        """How many labeled patients this client has outside the test fold of ``fold``."""
        return len({patient_of(self.volume_ids[i]) for i in self._split(fold).order})

    def labelable_patients(self, fold: int) -> int:
        """The upper bound's N: every training patient, less the validation patients when
        fine-tuning runs to convergence (they must stay unlabeled for training)."""
        held_out = self.cfg.finetune.validation_patients if self._converge else 0
        return self.training_patients(fold) - held_out

    def info(self) -> dict:
        return {"client": self.client_id,
                "patients": len({patient_of(v) for v in self.volume_ids}),
                "volumes": len(self.volume_ids),
                "slices": len(self.slices), "device": str(self.device), "pid": os.getpid(),
                "classes": list(self.classes), "machine": describe_machine(self.device)}

    def _require_set_up(self, state, what: str) -> None:
        """A round or save call needs the phase's set-up; a process Ray restarted since then
        has none (:class:`ClientNotReady`: the coordinator rebuilds it)."""
        if state is None:
            raise ClientNotReady(f"client {self.client_id} has no {what}: its process "
                                 f"restarted since the phase's set-up")

    def _injected_delay(self) -> None:
        """faults.delay_seconds: make this client a straggler on purpose (drills, tests)."""
        time.sleep(self.cfg.faults.delay_seconds.get(self.client_id, 0.0))

    # ------------------------------------------------------------------ pre-training
    def start_pretraining(self, method_name: str, fold: int) -> dict:
        """Build the method on this client's pre-training pool; say what it will send."""
        start = time.perf_counter()
        pool = self.slices.select_volumes(self._split(fold).train)
        torch.manual_seed(self.cfg.experiment.seed)   # same initial weights at every client
        salt = self.cfg.pretrain.sampler_seed   # 0: unsalted, the streams of earlier runs
        self.method = get_method_class(method_name)(method_config(self.cfg, method_name), pool,
                                                    self._generator(1, fold, *[salt] * bool(salt)),
                                                    self.device)
        if self.cfg.model.channels_last:
            for net in self.method.networks().values():
                net.to(memory_format=torch.channels_last)
        self.weights = FlatWeights(self.method.networks(), WeightLayout(self.method.shared_state()))
        self.fold = fold
        self.pretrain_rounds = 0   # rounds this client ran in this phase
        self.profile.setdefault("method_seconds", time.perf_counter() - start)
        self.profile.setdefault("rss_after_method_mb", resident_mb())
        shares = self.method.shares_features
        release = getattr(self.method, "release", None)   # privacy.*: each round's release
        return self._phase({"slices": len(pool), "n_weights": self.weights.layout.total,
                            "feature_dim": self.cfg.model.projection_dim if shares else None,
                            "federated": self.method.federated,
                            "privacy": None if release is None else release.as_dict()})

    def _phase(self, info: dict) -> dict:
        """Remember the contract of the phase a set-up call starts (the coordinator builds
        the same one from ``info``); return ``info``."""
        self.contract = phase_contract(info, self.cfg.data.partitions,
                                       self.cfg.pretrain.exchange_size)
        return info

    def _send(self, update: ClientUpdate) -> ClientUpdate:
        """``update`` if it honours the phase's message contract, checked here, before
        anything leaves the site (the coordinator checks again on arrival); else
        :class:`~fcl_ray.protocol.messages.MessageError`: nothing is sent this round."""
        return check_update(update, self.contract)

    def _load_global(self, global_weights: np.ndarray) -> None:
        """The global weights into the method's networks: one copy into the flat buffer, then
        the method's own ``load_shared_state`` with the live tensors (copying a tensor onto
        itself costs nothing) so hooks such as FedCA's reference model still run."""
        self.weights.load(global_weights)
        self.method.load_shared_state(self.weights.tensors)

    def _remote_sample_rng(self, round_index: int) -> np.random.Generator:
        """The generator that draws this round's ``pretrain.remote_sample`` rows: seeded from
        (experiment seed, client, fold, round), so a resumed run draws the same rows without
        any generator state in the checkpoint."""
        return np.random.default_rng(np.random.SeedSequence(
            [self.cfg.experiment.seed, self.client_id, 4, self.fold, round_index]))

    def pretrain_round(self, global_weights: Optional[np.ndarray], shared: Optional[dict],
                       round_index: Optional[int] = None,
                       config: Optional[dict] = None) -> ClientUpdate:
        """Load the global weights, train the local steps, return what the coordinator needs.
        ``round_index``: the federation's round (1-based; default: this client's own count),
        which picks the health rounds and seeds the remote sample. ``config``: the round's
        scalars from the strategy (FedProx's ``proximal_mu``; {} for FedAvg)."""
        start = time.perf_counter()
        self._require_set_up(self.method, "pre-training method")
        method = self.method
        self.pretrain_rounds += 1
        round_index = round_index or self.pretrain_rounds
        if global_weights is not None:
            self._load_global(global_weights)
        method.proximal = proximal_term(self._shared_parameters(), config)
        method.start_round(round_index)   # step-dependent schedules follow the federation
        p = self.cfg.pretrain
        remote = merge_remote(shared, self.client_id, self.device, p.remote_sample,
                              self._remote_sample_rng(round_index)) if shared else None
        compute_start = time.perf_counter()
        metrics = method.train_round(self.cfg.pretrain.local_steps, remote)
        metrics["compute_seconds"] = time.perf_counter() - compute_start
        self.profile.setdefault("first_round_compute_seconds", metrics["compute_seconds"])
        # The federation's round, not this client's count: a client that sat rounds out
        # (sampling, faults) measures in the same rounds as the others.
        measure = round_index % p.health_every == 0 or round_index == p.rounds
        health_start = time.perf_counter()
        if p.collapse_guard != "off" and measure:   # scalars only: nothing about images
            metrics.update({names.health(k): v for k, v in method.health().items()})
        metrics["health_seconds"] = time.perf_counter() - health_start
        delay_start = time.perf_counter()
        self._injected_delay()
        delay = time.perf_counter() - delay_start
        features = method.shared_features()
        weights = self.weights.vector()
        metrics["seconds"] = time.perf_counter() - start
        # What this call spent on the federation (weights in/out, remote features merged,
        # features out) rather than on steps, the health probe or an injected delay.
        metrics["exchange_seconds"] = (metrics["seconds"] - metrics["compute_seconds"]
                                       - metrics["health_seconds"] - delay)
        return self._send(ClientUpdate(client=self.client_id, weights=weights,
                                       n_samples=len(method.slices),
                                       features=None if features is None else features[0],
                                       partitions=None if features is None else features[1],
                                       metrics=metrics))

    def _shared_parameters(self) -> list[torch.nn.Parameter]:
        """The trained parameters among the weights this method shares (FedProx's term)."""
        return [t for t in self.weights.tensors.values() if isinstance(t, torch.nn.Parameter)]

    def breakdown(self) -> dict:
        """Where this client's time and memory went: its process's module imports, data
        build, method build, the compute of its first round (one-off warm-up included) and
        resident memory after each, plus the process's peak so far."""
        return {**self.profile, "client": self.client_id, "rss_now_mb": resident_mb(),
                "peak_rss_mb": peak_resident_mb(),
                "unneeded_modules_loaded": [m for m in lean.NOT_IN_ACTORS if sys.modules.get(m)]}

    def save_state(self, store_root: str, path: str) -> None:
        """Write this client's pre-training state into a round checkpoint."""
        # fsspec: imported only when used
        from fcl_ray.federation.checkpoint import CheckpointStore, client_file

        self._require_set_up(self.method, "pre-training state")
        CheckpointStore(store_root).save(f"{path}/{client_file(self.client_id)}",
                                         self.method.checkpoint_state())

    def load_state(self, store_root: str, path: str) -> bool:
        """Restore the state saved by :meth:`save_state`; False if this client has none
        (it died before that round's checkpoint) and starts from the global weights."""
        from fcl_ray.federation.checkpoint import CheckpointStore, client_file

        store = CheckpointStore(store_root)
        file = f"{path}/{client_file(self.client_id)}"
        if not store.fs.exists(file):
            return False
        self.method.load_checkpoint_state(store.load(file))
        return True

    def rejoin(self, setup: str, args: tuple, store_root: Optional[str] = None,
               phase: Optional[str] = None) -> dict:
        """Rebuild a client Ray restarted: the phase's set-up call ``setup`` with ``args``,
        then, with ``phase`` (its folder in the store at ``store_root``), its own state from
        the phase's newest complete round checkpoint (what ``--resume`` restores: networks,
        optimiser, bank, momentum network, RNG). The newest is looked up here, when the
        restarted process is up, not when the call was sent: older rounds are deleted as
        the federation goes on. Returns ``{"restored": bool, "round": the checkpoint's round
        or None, "why": why nothing was restored}``; a state that cannot be read leaves the
        fresh set-up rather than keeping the client out."""
        from fcl_ray.federation.checkpoint import CheckpointError, CheckpointStore

        if setup not in SETUP_CALLS:
            raise ValueError(f"'{setup}' is not a phase's set-up call ({', '.join(SETUP_CALLS)})")
        getattr(self, setup)(*args)
        if phase is None:
            return {"restored": False, "round": None, "why": "no checkpoint to restore"}
        last = None
        try:
            store = CheckpointStore(store_root)
            last = store.latest(phase)
            if last is None:
                return {"restored": False, "round": None, "why": "no checkpoint yet"}
            restored = self.load_state(store_root, store.round_dir(phase, last))
        # unreadable, or a state that does not fit the method (missing keys, other shapes)
        except (CheckpointError, ValueError, KeyError, RuntimeError) as err:
            getattr(self, setup)(*args)   # a half-restored state would be neither: start fresh
            return {"restored": False, "round": last, "why": str(err).splitlines()[0][:200]}
        return {"restored": restored, "round": last,
                "why": "" if restored else f"the round-{last} checkpoint holds no state of it"}

    def probe(self, global_weights: Optional[np.ndarray], fold: int, n_labeled: int) -> dict:
        """Quality signal of the current encoder, on training patients only (never the test
        fold). ``finetune.budget=steps``: a short fine-tune (``pretrain.probe_steps``) on the
        labeled patient(s), Dice on one validation case. ``converge``: a fine-tune to
        convergence, scored by its best Dice over all the validation patients (the tuning
        score of the benchmark, issue 20)."""
        if global_weights is not None:
            self._load_global(global_weights)
        ft = self.cfg.finetune
        if self._converge:
            trainer = self._new_trainer(self.method.encoder_state(), fold, n_labeled, purpose=3,
                                        total_steps=ft.max_steps)
            outcome = self._converge_on_validation(trainer, fold)
            return {"client": self.client_id, "dice_mean": outcome["val_dice"],
                    "steps": outcome["steps"]}
        trainer = self._new_trainer(self.method.encoder_state(), fold, n_labeled, purpose=3)
        trainer.train(self.cfg.pretrain.probe_steps)
        validation = self.slices.select_volumes([self._split(fold).validation])
        return {"client": self.client_id,
                **self._dice(trainer.unet, validation)}

    def finish_pretraining(self, global_weights: Optional[np.ndarray]) -> dict:
        """Adopt the final global weights (if federated) and hand out the encoder."""
        if global_weights is not None:
            self._load_global(global_weights)
        encoder = state_to_numpy(self.method.encoder_state())
        self.method, self.weights = None, None
        return encoder

    # ------------------------------------------------------------------ positive control
    def start_supervised_encoder(self) -> dict:
        """Build the positive control's U-Net and trainer on patients outside every site
        (:mod:`fcl_ray.methods.control`); the run asks one client actor, once."""
        start = time.perf_counter()
        self.control = control_trainer(self.cfg, self.device)
        labeled = self.control.labeled
        return {"volumes": int(labeled.volume.max()) + 1, "slices": len(labeled),
                "device": str(self.device), "seconds": time.perf_counter() - start}

    def train_supervised_encoder(self, steps: int) -> float:
        """``steps`` more steps of the control's U-Net; the mean loss."""
        self._require_set_up(self.control, "supervised encoder")
        return self.control.train(steps)

    def finish_supervised_encoder(self) -> dict:
        """The control's encoder half (arrays); the U-Net is released."""
        self._require_set_up(self.control, "supervised encoder")
        encoder = encoder_half(self.control.unet)
        self.control = None
        return encoder
    # ------------------------------------------------------------------ frozen-encoder probes
    def _frozen_encoder(self, encoder_state: Optional[dict]):
        """The encoder to probe; None: random init, drawn from the experiment's seed as the
        random-init U-Net's encoder is."""
        return probes.frozen_encoder(self.cfg.model.features, state_from_numpy(encoder_state),
                                     self.cfg.experiment.seed, self.device)

    def probe_features(self, encoder_state: Optional[dict], fold: int) -> dict:
        """Pooled features of this client's slices under a frozen encoder, with their
        partition and position, for the cross-site probes (no image leaves, as in FCL's
        exchange): its pre-training pool, which other sites' probes learn from, and its
        test-fold patients (``held_out``), on which its own values are scored."""
        split = self._split(fold)
        slices = self.slices.select_volumes(split.train + split.test)
        held_out = torch.isin(slices.volume, torch.as_tensor(split.test, dtype=torch.long,
                                                              device=slices.volume.device))
        features = probes.pooled_features(self._frozen_encoder(encoder_state), slices.images)
        return {"client": self.client_id, "features": features.numpy(),
                "partition": slices.partition.cpu().numpy(),
                "position": slices.position.cpu().numpy(), "held_out": held_out.cpu().numpy()}

    def segmentation_probe(self, encoder_state: Optional[dict], fold: int, n_labeled: int,
                           steps: int) -> float:
        """Dice on this client's test fold of a per-pixel linear probe on the frozen
        encoder, trained on its N labeled patients (the first N, as fine-tuning's)."""
        split = self._split(fold, n_labeled, validating=False)   # it does not early-stop
        seed = self._generator(5, fold, n_labeled).initial_seed()
        return probes.segmentation_probe(self._frozen_encoder(encoder_state),
                                         self.slices.select_volumes(split.labeled),
                                         self.slices.select_volumes(split.test),
                                         n_classes=self.n_outputs, steps=steps, seed=seed)

    # ------------------------------------------------------------------ fine-tuning
    def _new_trainer(self, encoder_state, fold: int, n_labeled: int, purpose: int = 2,
                     total_steps: int = 0) -> SegmentationTrainer:
        """A fresh U-Net (seeded decoder, given encoder) and its trainer on the N labeled
        volumes; ``purpose`` salts the sampling seed (2 fine-tuning, 3 probe)."""
        if n_labeled == ALL_LABELED:   # the upper bound: resolved here (seeds need N >= 0)
            n_labeled = self.labelable_patients(fold)
        split = self._split(fold, n_labeled)
        unet = init_unet(self.cfg.model.features, state_from_numpy(encoder_state),
                         seed=self.cfg.experiment.seed, device=self.device,
                         out_channels=self.n_outputs)
        if self.cfg.model.channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        ft = self.cfg.finetune
        return SegmentationTrainer(unet, self.slices.select_volumes(split.labeled),
                                   ft.batch_size, ft.lr, self._generator(purpose, fold, n_labeled),
                                   amp=self.cfg.model.amp,
                                   cosine_steps=total_steps if ft.lr_schedule == "cosine" else 0,
                                   encoder_lr_scale=ft.encoder_lr_scale,
                                   encoder_warmup_steps=ft.encoder_warmup_steps,
                                   loss=ft.loss, augment=ft.augment)

    def _dice(self, unet: torch.nn.Module, volumes) -> dict:
        """dice_<class> of each of this site's classes and dice_mean, on ``volumes``."""
        return summarise_dice(dice_per_volume(unet, volumes, self.n_outputs), self.classes)

    def _evaluate(self, unet: torch.nn.Module, fold: int) -> dict:
        test = self.slices.select_volumes(self._split(fold).test)
        return {"client": self.client_id, **self._dice(unet, test)}

    def _validation_slices(self, fold: int):
        """This client's validation patients (training pool, never the test fold, never
        labeled): what the early-stopping score is measured on. Selected once per
        fine-tune, not at every evaluation."""
        return self.slices.select_volumes(self._split(fold).validation_volumes)

    def _converge_on_validation(self, trainer: SegmentationTrainer, fold: int) -> dict:
        """Train until this client's validation Dice stops improving (finetune keys)."""
        ft = self.cfg.finetune
        validation = self._validation_slices(fold)
        return train_to_convergence(trainer, lambda: mean_dice(trainer.unet, validation,
                                                                self.n_outputs),
                                    ft.eval_every, ft.patience, ft.max_steps)

    def finetune_local(self, encoder_state: Optional[dict], fold: int, n_labeled: int) -> dict:
        """Fine-tune on this client's N labeled volumes alone; Dice on its test fold.

        ``finetune.budget=steps``: ``finetune.steps`` steps; ``converge``: until the
        validation Dice stops improving (best weights restored). Self-contained (no actor
        state touched), so several can run at once when the actor has ``max_concurrency`` > 1."""
        start = time.perf_counter()
        ft = self.cfg.finetune
        if self._converge:
            trainer = self._new_trainer(encoder_state, fold, n_labeled, total_steps=ft.max_steps)
            outcome = self._converge_on_validation(trainer, fold)
        else:
            trainer = self._new_trainer(encoder_state, fold, n_labeled, total_steps=ft.steps)
            outcome = {"steps": ft.steps, "train_loss": trainer.train(ft.steps)}
        return {**self._evaluate(trainer.unet, fold), **outcome,
                "seconds": time.perf_counter() - start, **self._budget(fold, n_labeled)}

    def _budget(self, fold: int, n_labeled: int) -> dict:
        """The N actually used, when it was 'all' (so the results row says how many)."""
        return {"n_labeled": self.labelable_patients(fold)} if n_labeled == ALL_LABELED else {}

    def start_federated_finetune(self, encoder_state: Optional[dict], fold: int,
                                 n_labeled: int) -> dict:
        ft = self.cfg.finetune
        total = ft.max_steps if self._converge else ft.rounds * ft.local_steps
        self.trainer = self._new_trainer(encoder_state, fold, n_labeled, total_steps=total)
        self.validation = self._validation_slices(fold) if self._converge else None
        unet = self.trainer.unet
        self.ft_weights = FlatWeights({"": unet}, WeightLayout(unet.state_dict()))
        return self._phase({"slices": len(self.trainer.labeled),
                            "n_weights": self.ft_weights.layout.total,
                            "feature_dim": None, "federated": True})

    def finetune_round(self, global_weights: Optional[np.ndarray],
                       config: Optional[dict] = None) -> ClientUpdate:
        """Load the global U-Net, train the local steps, return the update; ``config`` as
        in :meth:`pretrain_round`."""
        self._require_set_up(self.ft_weights, "fine-tuning U-Net")
        if global_weights is not None:
            self.ft_weights.load(global_weights)
        self.trainer.proximal = proximal_term(self.trainer.unet.parameters(), config)
        compute_start = time.perf_counter()
        loss = self.trainer.train(self.cfg.finetune.local_steps)
        compute = time.perf_counter() - compute_start
        self._injected_delay()
        return self._send(ClientUpdate(client=self.client_id,
                                       weights=self.ft_weights.vector(),
                                       n_samples=len(self.trainer.labeled),
                                       metrics={"loss": loss, "compute_seconds": compute}))

    def validate_global(self, global_weights: np.ndarray, fold: int) -> float:
        """Validation Dice of the global U-Net on this client's validation patients (the
        next round loads the global weights again, so loading them here changes nothing)."""
        self.ft_weights.load(global_weights)
        return mean_dice(self.trainer.unet, self.validation, self.n_outputs)

    def finish_federated_finetune(self, global_weights: np.ndarray, fold: int,
                                  n_labeled: int = 0) -> dict:
        self.ft_weights.load(global_weights)
        result = {**self._evaluate(self.trainer.unet, fold), **self._budget(fold, n_labeled)}
        self.trainer, self.ft_weights, self.validation = None, None, None
        return result
