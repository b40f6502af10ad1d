"""``fcl-ray data check``: validate a dataset and show how it would be federated.

A case is a patient; its frames (ED, ES, extra cine frames) are its volumes. Prints, per
client: its patients, and per patient the frames read, slices, stored spacing,
intensity range and label values found (before remapping); then the planned labeled / test /
unlabeled counts for fold ``finetune.folds[0]`` and N = ``max(finetune.n_labeled)``. Any
problem raises :class:`DataError` (one line naming the file; the CLI exits 2), unless
``data.skip_bad_cases`` turns per-case problems into a warning.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from fcl_ray.config import Config
from fcl_ray.data import DataError, patient_of
from fcl_ray.data.split import patient_split


def _plan_line(ids: list[str], labeled: list[bool], cfg: Config, client: int) -> str:
    fold, n = cfg.finetune.folds[0], max(cfg.finetune.n_labeled)
    s = patient_split(ids, labeled, cfg.data.folds, fold, n, cfg.experiment.seed, client)
    count = lambda idx: len({patient_of(ids[i]) for i in idx})  # noqa: E731
    return (f"  plan (fold {fold}, N={n}): labeled {count(s.labeled)} patients "
            f"({len(s.labeled)} volumes), test {count(s.test)} ({len(s.test)}), "
            f"unlabeled {count(s.unlabeled)} ({len(s.unlabeled)})")


def _synthetic(cfg: Config, out: Callable[[str], None]) -> None:
    from fcl_ray.data import load_client_volumes

    d = cfg.data
    out(f"dataset synthetic: {d.clients} clients x {d.cases_per_client} patients, "
        f"{d.image_size}x{d.image_size} px")
    for client in range(d.clients):
        vols = load_client_volumes(cfg, client)
        depths = [len(v.image) for v in vols]
        labels = sorted({int(x) for v in vols if v.label is not None for x in np.unique(v.label)})
        frames = ",".join(dict.fromkeys(v.volume_id.split(":")[-1] for v in vols))
        out(f"client{client}: {len({patient_of(v.volume_id) for v in vols})} patients, "
            f"{len(vols)} volumes (frames {frames}), {sum(depths)} slices "
            f"({min(depths)}-{max(depths)} per volume), "
            f"intensity {min(v.image.min() for v in vols):.3g}..{max(v.image.max() for v in vols):.3g}"
            f", labels {labels}")
        out(_plan_line([v.volume_id for v in vols], [v.label is not None for v in vols], cfg,
                       client))


def preflight(cfg: Config) -> None:
    """What ``fcl-ray run`` does before starting Ray: every case read, checked and cached."""
    check_dataset(cfg, out=lambda line: None)


def check_dataset(cfg: Config, out: Callable[[str], None] = print) -> None:
    """Read every case of every client (through the cache) and print the report."""
    from fcl_ray.data.labels import class_names, dice_columns

    d = cfg.data
    classes = class_names(d)   # a data.classes naming no label stops here (one line)
    out(f"classes: {', '.join(f'{i} {name}' for i, name in enumerate(classes, 1))} "
        f"(results columns {', '.join(dice_columns(classes))})")
    if d.kind == "synthetic":
        return _synthetic(cfg, out)
    from fcl_ray.data.readers import check_counts, client_cases, load_case
    from fcl_ray.data.sites import site_names

    with warnings.catch_warnings(record=True) as caught:   # listing problems, if skipped
        warnings.simplefilter("always")
        groups, wheres = client_cases(d)
    where = ", ".join(dict.fromkeys(wheres))
    out(f"dataset {d.kind} at {where}: {sum(map(len, groups))} patients, {d.clients} clients "
        f"(split {'client_roots' if d.client_roots else d.split}), preprocessed to "
        f"{d.image_size}x{d.image_size} px at {d.spacing:g} mm in-plane")
    skipped = [str(w.message) for w in caught]
    for client, (cases, name) in enumerate(zip(groups, site_names(groups, d))):
        out(f"{name}: {len(cases)} patients")
        out(f"  {'patient':<14} {'frames':<14} {'slices':>6}  {'spacing (mm)':<18} "
            f"{'intensity':<18} labels")
        ids, labeled, problems = [], [], []
        for case in cases:
            try:
                lc = load_case(case, d, keep_frames=True)
            except DataError as err:
                problems.append(err)
                continue
            f0 = lc.frames[0]
            import nibabel as nib
            zooms = nib.affines.voxel_sizes(f0.affine)
            lo = min(float(f.image.min()) for f in lc.frames)
            hi = max(float(f.image.max()) for f in lc.frames)
            found = sorted({v for f in lc.frames for v in f.raw_labels})
            frames = ",".join(v.volume_id.split(":")[-1] for v in lc.volumes)
            out(f"  {case.case_id:<14} {frames:<14} {len(lc.volumes[0].image):>6}  "
                f"{'x'.join(f'{z:.3g}' for z in zooms):<18} {f'{lo:.4g}..{hi:.4g}':<18} "
                f"{found}")
            ids += [v.volume_id for v in lc.volumes]
            labeled += [v.label is not None for v in lc.volumes]
        if problems:
            if not d.skip_bad_cases:
                raise problems[0]
            skipped += [str(p) for p in problems]
        n_patients = len({patient_of(i) for i in ids})
        check_counts(n_patients, client, wheres[client], cfg)
        out(_plan_line(ids, labeled, cfg, client))
    if skipped:
        out("skipped (data.skip_bad_cases):\n  " + "\n  ".join(skipped))
