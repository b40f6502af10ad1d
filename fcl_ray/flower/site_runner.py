"""A site's side of the Flower runtime: the same :class:`ClientSite` as on Ray, with its
state on the site's own disk.

Flower runs a ClientApp in a fresh process for every message, so nothing survives in
memory between rounds. Each call rebuilds the site (its data, the phase's networks, drawn
from the same seeds as on Ray) and restores what training changed from the site's state
folder: the method's checkpoint state (networks, optimiser, bank, generator; what
``--resume`` restores on Ray), the fine-tuning trainer, the final encoders. None of it is
sent anywhere: the coordinator holds only global state.

Pre-training state is kept per round (``pretrain/<method>-fold<f>/round-<r>/``): round
``r`` starts from the site's newest state before ``r``. So a site that sat rounds out (its
SuperNode was down) goes on from its last round, and a coordinator that resumes from its
last complete checkpoint finds every site's state of that round, even when a site already
ran the round after it. Rounds no resume can need any more are deleted.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
import torch

from fcl_ray.federation.checkpoint import CheckpointStore, client_file, phase_name
from fcl_ray.federation.site import ClientSite
from fcl_ray.protocol.messages import (ClientUpdate, Contract, MessageError, check_update,
                                       phase_contract)
from fcl_ray.flower.nodes import SiteSettings, site_config


def newest_round(saved: Iterable[int], at_most: int) -> Optional[int]:
    """The newest of the ``saved`` rounds that is not after ``at_most`` (None: none is)."""
    return max((r for r in saved if r <= at_most), default=None)


def rounds_to_drop(saved: Iterable[int], keep_from: int) -> list[int]:
    """The ``saved`` rounds no round can start from any more: those before the newest one
    at or before ``keep_from`` (the coordinator's last complete checkpoint, where a
    ``--resume`` would go on from)."""
    saved = list(saved)
    base = newest_round(saved, keep_from)
    return [] if base is None else sorted(r for r in saved if r < base)


def checked_update(update: ClientUpdate, contract: Contract) -> ClientUpdate:
    """``update`` if it honours ``contract``; else MessageError, raised at the site so that
    nothing of it is sent."""
    try:
        return check_update(update, contract)
    except MessageError as err:
        raise MessageError(f"refused at the site before sending: {err}") from None


class SiteRunner:
    """One message's work at one site (``cfg_dict``: the study; ``settings``: the node's)."""

    def __init__(self, cfg_dict: dict, settings: SiteSettings):
        self.settings = settings
        self.site = ClientSite(site_config(cfg_dict, settings), settings.site, settings.threads)
        self.cfg = self.site.cfg
        self.store = CheckpointStore(str(settings.state_dir / self.cfg.experiment.name))

    def _file(self, *parts: str) -> str:
        return "/".join([self.store.root.rstrip("/"), *parts])

    # ------------------------------------------------------------------ pre-training
    def _phase_dir(self, method: str, fold: int) -> str:
        return self._file("pretrain", phase_name(method, fold))

    def _round_dir(self, method: str, fold: int, round_index: int) -> str:
        return self.store.round_dir(f"pretrain/{phase_name(method, fold)}", round_index)

    def _saved_rounds(self, method: str, fold: int) -> list[int]:
        """The rounds of the phase this site holds its state of."""
        files = self.store.fs.glob(f"{self._phase_dir(method, fold)}/round-*/"
                                   f"{client_file(self.settings.site)}")
        return sorted(int(f.rsplit("/", 2)[-2].removeprefix("round-")) for f in files)

    def _contract(self, info: dict) -> Contract:
        """What this site may send in the phase (the coordinator builds the same one)."""
        return phase_contract(info, self.cfg.data.partitions, self.cfg.pretrain.exchange_size)

    def start_pretraining(self, method: str, fold: int, resume: bool = False) -> dict:
        """Set the phase up from the seeds and save it as round 0; a fresh phase (not
        ``resume``) first deletes what an earlier run of it left on this disk."""
        info = self.site.start_pretraining(method, fold)
        phase = self._phase_dir(method, fold)
        if not resume and self.store.fs.exists(phase):
            self.store.fs.rm(phase, recursive=True)
        self.site.save_state(self.store.url, self._round_dir(method, fold, 0))
        return info

    def _resume_pretraining(self, method: str, fold: int, after: int) -> dict:
        """The phase rebuilt from the seeds with this site's newest state up to round
        ``after``."""
        info = self.site.start_pretraining(method, fold)   # same seeds as the first call
        saved = newest_round(self._saved_rounds(method, fold), after)
        if saved is None or not self.site.load_state(self.store.url,
                                                     self._round_dir(method, fold, saved)):
            raise RuntimeError(f"site {self.settings.site}: no pre-training state of "
                               f"{method} fold {fold} up to round {after} under "
                               f"{self.store.root}")
        return info

    def pretrain_round(self, method: str, fold: int, round_index: int,
                       global_weights: Optional[np.ndarray], pool: Optional[dict],
                       keep_from: int = 0, config: Optional[dict] = None) -> ClientUpdate:
        """Round ``round_index`` from this site's newest earlier state (``config``: the
        round's scalars from the strategy, as on Ray); its state is saved as that round's,
        and states older than ``keep_from`` needs are deleted."""
        info = self._resume_pretraining(method, fold, round_index - 1)
        update = self.site.pretrain_round(global_weights, pool, round_index, config)
        update = checked_update(update, self._contract(info))
        self.site.save_state(self.store.url, self._round_dir(method, fold, round_index))
        for old in rounds_to_drop(self._saved_rounds(method, fold), keep_from):
            self.store.fs.rm(self._round_dir(method, fold, old), recursive=True)
        return update

    def finish_pretraining(self, method: str, fold: int, global_weights: Optional[np.ndarray],
                           last_round: int) -> dict:
        """Adopt the final global weights; the encoder stays on this site's disk."""
        self._resume_pretraining(method, fold, last_round)
        encoder = self.site.finish_pretraining(global_weights)
        self.store.save(self._encoder_file(method, fold),
                        {k: torch.from_numpy(np.array(v)) for k, v in encoder.items()})
        return {"encoder_tensors": len(encoder)}

    def _encoder_file(self, method: str, fold: int) -> str:
        return self._file("encoders", f"{method}-fold{fold}.pt")

    def encoder(self, method: str, fold: int) -> Optional[dict]:
        """This site's encoder of ``method`` (None: random init, for methods without one)."""
        file = self._encoder_file(method, fold)
        if not self.store.fs.exists(file):
            from fcl_ray.methods import has_pretraining
            if has_pretraining(method):
                raise RuntimeError(f"site {self.settings.site}: no encoder of {method} fold "
                                   f"{fold} in {file}: pre-train it first")
            return None
        return {k: v.numpy() for k, v in self.store.load(file).items()}

    # ------------------------------------------------------------------ fine-tuning
    def _trainer_file(self, method: str, fold: int, n_labeled: int) -> str:
        return self._file("finetune", f"{method}-fold{fold}-n{n_labeled}",
                          f"client-{self.settings.site}.pt")

    def _save_trainer(self, method: str, fold: int, n_labeled: int) -> None:
        trainer = self.site.trainer
        self.store.save(self._trainer_file(method, fold, n_labeled), {
            "unet": trainer.unet.state_dict(), "optimizer": trainer.optimizer.state_dict(),
            "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
            "gen": trainer.gen.get_state(), "steps_done": trainer.steps_done})

    def _resume_finetune(self, method: str, fold: int, n_labeled: int) -> dict:
        info = self.site.start_federated_finetune(self.encoder(method, fold), fold, n_labeled)
        state = self.store.load(self._trainer_file(method, fold, n_labeled))
        trainer = self.site.trainer
        trainer.unet.load_state_dict(state["unet"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.scheduler is not None:
            trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.gen.set_state(state["gen"])
        trainer.steps_done = state["steps_done"]
        return info

    def start_finetune(self, method: str, fold: int, n_labeled: int) -> dict:
        info = self.site.start_federated_finetune(self.encoder(method, fold), fold, n_labeled)
        self._save_trainer(method, fold, n_labeled)
        return info

    def finetune_round(self, method: str, fold: int, n_labeled: int,
                       global_weights: Optional[np.ndarray],
                       config: Optional[dict] = None) -> ClientUpdate:
        info = self._resume_finetune(method, fold, n_labeled)
        update = checked_update(self.site.finetune_round(global_weights, config),
                                self._contract(info))
        self._save_trainer(method, fold, n_labeled)
        return update

    def validate_global(self, method: str, fold: int, n_labeled: int,
                        global_weights: np.ndarray) -> float:
        """The global U-Net's Dice on this site's validation patients
        (``finetune.budget=converge``); the saved trainer is left as it was."""
        self._resume_finetune(method, fold, n_labeled)
        return self.site.validate_global(global_weights, fold)

    def finish_finetune(self, method: str, fold: int, n_labeled: int,
                        global_weights: np.ndarray) -> dict:
        self._resume_finetune(method, fold, n_labeled)
        return self.site.finish_federated_finetune(global_weights, fold, n_labeled)

    def finetune_local(self, method: str, fold: int, n_labeled: int) -> dict:
        return self.site.finetune_local(self.encoder(method, fold), fold, n_labeled)
