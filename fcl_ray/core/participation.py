"""Which clients a round samples (``federation.clients_per_round``): a seeded stream whose
state goes into the round checkpoint, so ``--resume`` draws what the run would have drawn."""
from __future__ import annotations

import json
from typing import Union

import numpy as np

from fcl_ray.config import participants_per_round

PARTICIPATION_SALT = 21   # keeps the participant stream apart from every other seeded stream


def participant_generator(seed: int, fold: int) -> np.random.Generator:
    """The seeded generator that draws a phase's participants. Every method of a fold gets the
    same sequence, so methods are compared on the same rounds' clients."""
    return np.random.default_rng(np.random.SeedSequence([seed, PARTICIPATION_SALT, fold]))


def sample_participants(clients: int, clients_per_round: Union[int, float, None],
                        rng: np.random.Generator) -> list[int]:
    """This round's participants, sorted: all clients when ``clients_per_round`` is None
    (``rng`` untouched, so runs without sampling are what they were), else a uniform draw
    without replacement of :func:`participants_per_round` of them."""
    count = participants_per_round(clients, clients_per_round)
    if count >= clients:
        return list(range(clients))
    return sorted(int(c) for c in rng.choice(clients, size=count, replace=False))


def generator_state(rng: np.random.Generator) -> str:
    """The generator's state as JSON (its 128-bit integers do not fit a NumPy integer array;
    a string does, and the coordinator's .npz is read without pickle)."""
    return json.dumps(rng.bit_generator.state)


def restore_generator(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)
