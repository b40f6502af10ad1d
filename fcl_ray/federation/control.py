"""The positive control's encoder for a run: trained once in a client actor, cached on disk.

The encoder of ``supervised_encoder`` (:mod:`fcl_ray.methods.control`) depends on neither the
fold nor the client, so a run trains it once, in client 0's actor (the driver only sequences
the calls and logs), in chunks of :data:`LOG_EVERY` steps so progress and the loss show up
while it trains. It is saved as ``<output_dir>/encoders/supervised_encoder.pt`` beside a JSON
file of the settings it was trained with; ``--resume`` reuses it when those settings match.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fcl_ray.config import Config
from fcl_ray.core import metrics as names
from fcl_ray.config_io import to_dict
from fcl_ray.federation.cluster import gather
from fcl_ray.federation.driver import as_tensors, save_atomic
from fcl_ray.methods import SUPERVISED_ENCODER

LOG_EVERY = 250   # steps between progress lines (and MLflow loss points)


def cache_path(cfg: Config) -> Path:
    return Path(cfg.experiment.output_dir) / "encoders" / f"{SUPERVISED_ENCODER}.pt"


def trained_with(cfg: Config) -> dict:
    """What the control's encoder depends on: the seed, the data (its phantom and patients'
    shape), the model and the control section (its URI aside). JSON-normalised."""
    tree = to_dict(cfg)
    control = {k: v for k, v in tree["control"].items() if k != "encoder"}
    settings = {"seed": cfg.experiment.seed, "data": tree["data"], "model": tree["model"],
                "control": control}
    return json.loads(json.dumps(settings))


def _cached(cfg: Config, log: Callable[[str], None]) -> dict | None:
    """The cached encoder if it was trained with this run's settings, else None."""
    path = cache_path(cfg)
    settings = path.with_suffix(".json")
    if not (path.is_file() and settings.is_file()):
        return None
    try:
        same = json.loads(settings.read_text()) == trained_with(cfg)
        state = torch.load(path, map_location="cpu", weights_only=True) if same else None
    except Exception as err:   # noqa: BLE001  (a torn or foreign file: train it again)
        log(f"[{SUPERVISED_ENCODER}] cached encoder {path} unreadable ({type(err).__name__}); "
            f"training it again")
        return None
    if state is None:
        log(f"[{SUPERVISED_ENCODER}] cached encoder {path} was trained with other settings; "
            f"training it again")
        return None
    return {k: v.numpy() for k, v in state.items()}


def _save(cfg: Config, state: dict) -> Path:
    path = cache_path(cfg)
    save_atomic(as_tensors(state), path)
    # Written after the weights: a settings file always describes the weights beside it.
    path.with_suffix(".json").write_text(json.dumps(trained_with(cfg), indent=1))
    return path


def supervised_encoder(cfg: Config, client, tracker, log: Callable[[str], None],
                       resume: bool) -> dict[str, np.ndarray]:
    """The control's encoder state: the cached one on ``resume`` (same settings), else
    trained in ``client``'s actor (``control.steps`` steps), cached, and its loss logged as
    ``supervised_encoder/train_loss`` through ``tracker``."""
    c = cfg.control
    if resume:
        state = _cached(cfg, log)
        if state is not None:
            log(f"[{SUPERVISED_ENCODER}] reusing the encoder cached in {cache_path(cfg)}")
            return state
    start = time.perf_counter()
    info = gather([client.start_supervised_encoder.remote()])[0]
    log(f"[{SUPERVISED_ENCODER}] training the positive control's U-Net with labels: "
        f"{info['volumes']} volumes ({info['slices']} slices) of {c.sites} sites x "
        f"{c.cases_per_site} patients outside the benchmark (seed {cfg.experiment.seed} + "
        f"{c.seed_offset}), {c.steps} steps on {info['device']}")
    done = 0
    while done < c.steps:
        chunk = min(LOG_EVERY, c.steps - done)
        loss = gather([client.train_supervised_encoder.remote(chunk)])[0]
        done += chunk
        log(f"  step {done}/{c.steps} loss {loss:.4f} ({time.perf_counter() - start:.1f}s)")
        tracker.log_metrics({names.of_method(SUPERVISED_ENCODER, "train_loss"): loss}, step=done)
    state = gather([client.finish_supervised_encoder.remote()])[0]
    path = _save(cfg, state)
    log(f"[{SUPERVISED_ENCODER}] trained in {time.perf_counter() - start:.1f}s; saved to {path}")
    return state
