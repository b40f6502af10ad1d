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
    if cfg.data.kind == "synthetic":
        return _phantom_site(cfg, client, 0, cfg.data.cases_per_client)
    from fcl_ray.data.readers import load_client  # late: readers import MONAI and nibabel

    return load_client(cfg, client)


def heldout_volumes(cfg: Config, client: int, count: int) -> list[Volume]:
    """``count`` phantom patients of site ``client`` that no run ever trains on: cases
    ``data.cases_per_client`` onward, drawn as the site's own (its scanner, its phenotype mix,
    the same frames) from their own per-case random streams. The privacy audit's non-members."""
    if cfg.data.kind != "synthetic":
        raise ValueError("held-out patients are drawn on the phantom only")
    return _phantom_site(cfg, client, cfg.data.cases_per_client, count)


def _phantom_site(cfg: Config, client: int, first_case: int, cases: int) -> list[Volume]:
    """Cases ``first_case`` .. ``first_case + cases - 1`` of phantom site ``client``."""
    from fcl_ray.data.readers.common import phases  # numpy only

    d = cfg.data
    cycle = CINE_FRAMES if d.cine_frames is None else d.cine_frames
    if d.phantom == "v2":
        from fcl_ray.data import phantom_v2

        return phantom_v2.make_cine_site(
            cfg.experiment.seed, client, cases, d.image_size, (d.slices_min, d.slices_max),
            d.noise, cycle, phases(d), d.extra_frames,
            phantom_v2.DEFAULT_SITE_SKEW if d.site_skew is None else d.site_skew,
            tuple(d.phenotypes) or phantom_v2.PHENOTYPES,
            tuple(d.field_of_view or phantom_v2.DEFAULT_FIELD_OF_VIEW), first_case,
            d.motion_ghosts,
            phantom_v2.DEFAULT_SLICE_GAIN_JITTER if d.slice_gain_jitter is None
            else d.slice_gain_jitter, d.shape_variation)
    return make_cine_site(cfg.experiment.seed, client, cases, d.image_size,
                          (d.slices_min, d.slices_max), d.noise, cycle, phases(d),
                          d.extra_frames, first_case)


def patient_of(volume_id: str) -> str:
    """The case (patient) a volume belongs to: ``patient001:ES`` -> ``patient001``."""
    return volume_id.split(":", 1)[0]
