"""Datasets: what one client (site) holds. Each client loads only its own cases."""
from __future__ import annotations

from fcl_ray.config import Config
from fcl_ray.data.synthetic import Volume, make_site


class DataError(ValueError):
    """A bad dataset: the message names the file and the problem."""

    def __init__(self, message: str):
        # Always one line, even when a file name or value holds line breaks.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


def load_client_volumes(cfg: Config, client: int) -> list[Volume]:
    """The volumes of client ``client`` only (called inside that client's actor).

    Real datasets (``acdc``, ``mnms``, ``decathlon``) come from ``fcl_ray/data/readers``:
    volumes with masks first, then any unlabeled extra frames (``label`` None). Volume ids
    are ``<case>:<frame>`` (``patient001:ED``) so that frames of one patient can be grouped.
    """
    d = cfg.data
    if d.kind == "synthetic":
        return make_site(cfg.experiment.seed, client, d.cases_per_client, d.image_size,
                         (d.slices_min, d.slices_max), d.noise)
    from fcl_ray.data.readers import load_client  # late: readers import MONAI and nibabel

    return load_client(cfg, client)


def patient_of(volume_id: str) -> str:
    """The case (patient) a volume belongs to: ``patient001:ES`` -> ``patient001``."""
    return volume_id.split(":", 1)[0]
