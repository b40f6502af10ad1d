"""Datasets: what one client (site) holds. Each client loads only its own cases."""
from __future__ import annotations

from fcl_ray.config import Config
from fcl_ray.errors import FclRayError
from fcl_ray.data.synthetic import CINE_FRAMES, Volume, make_cine_site


class DataError(FclRayError):
    """A bad dataset: the message (one line) names the file and the problem."""


def load_client_volumes(cfg: Config, client: int) -> list[Volume]:
    """The volumes of client ``client`` only (called inside that client's actor).

    Real datasets (``acdc``, ``mnms``, ``decathlon``) come from ``fcl_ray/data/readers``,
    the phantom (``synthetic``, ``data.phantom`` v1 or v2) from its cine (``data.cine_frames``); either way volumes with
    masks come first, then any unlabeled extra frames (``label`` None). Volume ids are
    ``<case>:<frame>`` (``patient001:ED``, ``site00_case003:t05``) so that frames of one
    patient can be grouped (:func:`patient_of`).
    """
    d = cfg.data
    if d.kind == "synthetic":
        from fcl_ray.data.readers.common import phases  # numpy only

        cycle = CINE_FRAMES if d.cine_frames is None else d.cine_frames
        if d.phantom == "v2":
            from fcl_ray.data import phantom_v2

            return phantom_v2.make_cine_site(
                cfg.experiment.seed, client, d.cases_per_client, d.image_size,
                (d.slices_min, d.slices_max), d.noise, cycle, phases(d), d.extra_frames,
                phantom_v2.DEFAULT_SITE_SKEW if d.site_skew is None else d.site_skew,
                tuple(d.phenotypes) or phantom_v2.PHENOTYPES,
                tuple(d.field_of_view or phantom_v2.DEFAULT_FIELD_OF_VIEW))
        return make_cine_site(cfg.experiment.seed, client, d.cases_per_client, d.image_size,
                              (d.slices_min, d.slices_max), d.noise, cycle, phases(d),
                              d.extra_frames)
    from fcl_ray.data.readers import load_client  # late: readers import MONAI and nibabel

    return load_client(cfg, client)


def patient_of(volume_id: str) -> str:
    """The case (patient) a volume belongs to: ``patient001:ES`` -> ``patient001``."""
    return volume_id.split(":", 1)[0]
