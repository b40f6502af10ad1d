"""Datasets: what one client (site) holds. Each client loads only its own cases."""
from __future__ import annotations

from fcl_ray.config import Config
from fcl_ray.data.synthetic import Volume, make_site


class DataError(ValueError):
    """A bad dataset: the message names the file and the problem."""


def load_client_volumes(cfg: Config, client: int) -> list[Volume]:
    """The volumes of client ``client`` only (called inside that client's actor)."""
    d = cfg.data
    if d.kind == "synthetic":
        return make_site(cfg.experiment.seed, client, d.cases_per_client, d.image_size,
                         (d.slices_min, d.slices_max), d.noise)
    raise DataError(f"data.kind '{d.kind}' has no reader")
