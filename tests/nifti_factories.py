"""Tiny datasets in the real on-disk layouts (ACDC, M&Ms, Decathlon), written with nibabel.

Realistic quirks on purpose: anisotropic voxels (about 1.5 mm in-plane, 8-10 mm slices),
in-plane sizes, spacings and slice counts that differ between patients, 4D cines with masks
only at ED and ES, one ACDC patient stored apex-first with a flipped axis, M&Ms label order.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np


def heart(shape: tuple[int, int, int], rng: np.random.Generator, phase: float = 0.0):
    """(X, Y, Z) image and ACDC-convention mask (1 RV, 2 myo, 3 LV) of a heart whose
    cross-section shrinks from slice 0 (base) to the last slice (apex)."""
    x, y, z = shape
    gx, gy = np.meshgrid(np.arange(x) - x / 2 + rng.uniform(-2, 2),
                         np.arange(y) - y / 2 + rng.uniform(-2, 2), indexing="ij")
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    radius = min(x, y) * rng.uniform(0.2, 0.26) * (1 - 0.15 * phase)
    for k in range(z):
        t = k / max(z - 1, 1)
        r = radius * (1 - 0.6 * t)
        d = np.hypot(gx, gy)
        lv, myo = d < 0.6 * r, (d >= 0.6 * r) & (d < r)
        rv = (np.hypot(gx + 1.4 * r, gy) < 0.7 * r * (1 - t)) & ~myo & ~lv
        label[..., k][rv], label[..., k][myo], label[..., k][lv] = 1, 2, 3
        image[..., k] = 100 + 300 * (lv | rv) + 40 * myo
    image += rng.normal(0, 10, shape).astype(np.float32)
    return np.abs(image) * rng.uniform(0.5, 3.0), label


def affine(spacing, flip_x: bool = False) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    if flip_x:
        a[0, 0] = -a[0, 0]
    return a


def save(path: Path, data: np.ndarray, aff: np.ndarray, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data if dtype is None else data.astype(dtype), aff), str(path))
    return path


def _shape(rng, i: int) -> tuple[int, int, int]:
    return (36 + 4 * (i % 3), 40 - 2 * (i % 2), 4 + i % 4)       # sizes and depths vary


def write_acdc(root: Path, n_cases: int = 4, frames: int = 5, seed: int = 0,
               apex_first: int | None = 1, groups: tuple[str, ...] = ("NOR",)) -> Path:
    """ACDC: patientXXX/Info.cfg, _4d, _frameYY and _frameYY_gt (ED frame 1, ES frame 3).

    Patient i's pathology ``Group`` is ``groups[i % len(groups)]``.

    Patient ``apex_first`` is stored apex-first with a flipped x axis (as an odd scanner
    export would be), to exercise orientation and base-to-apex ordering.
    """
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        name = f"patient{i + 1:03d}"
        folder = root / "training" / name
        shape = _shape(rng, i)
        spacing = (rng.uniform(1.3, 1.7),) * 2 + (rng.choice([8.0, 10.0]),)
        odd = i == apex_first
        cine, masks = [], {}
        for t in range(frames):
            img, lab = heart(shape, rng, phase=t / frames)
            if odd:
                img, lab = img[::-1, :, ::-1], lab[::-1, :, ::-1]
            cine.append(img)
            masks[t + 1] = lab
        aff = affine(spacing, flip_x=odd)
        save(folder / f"{name}_4d.nii.gz", np.stack(cine, -1), aff)
        ed, es = 1, 3
        for frame in (ed, es):
            save(folder / f"{name}_frame{frame:02d}.nii.gz", cine[frame - 1], aff)
            save(folder / f"{name}_frame{frame:02d}_gt.nii.gz", masks[frame], aff, np.uint8)
        folder.joinpath("Info.cfg").write_text(
            f"ED: {ed}\nES: {es}\nGroup: {groups[i % len(groups)]}\nHeight: 180.0\n"
            f"NbFrame: {frames}\nWeight: 75.0\n")
    return root


MNMS_LABELS = np.array([0, 3, 2, 1], np.uint8)   # project (1 RV, 2 myo, 3 LV) -> M&Ms order


def write_mnms(root: Path, vendors=("A", "A", "B", "B", "C", "C"), frames: int = 6,
               seed: int = 0) -> Path:
    """M&Ms: Training/Labeled/<code>/<code>_sa(.gt).nii.gz 4D files and the metadata CSV.
    Centre = vendor index + 1; ED = frame 0, ES = a later frame; masks only at ED and ES."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, vendor in enumerate(vendors):
        code = f"{vendor}{i:01d}X{i * 7 % 10}Y{i}"
        folder = root / "Training" / "Labeled" / code
        shape = _shape(rng, i)
        spacing = (rng.uniform(1.2, 1.6),) * 2 + (rng.choice([9.0, 10.0]),)
        cine = np.zeros(shape + (frames,), np.float32)
        gt = np.zeros(shape + (frames,), np.uint8)
        ed, es = 0, 2 + i % 3
        for t in range(frames):
            cine[..., t], lab = heart(shape, rng, phase=t / frames)
            if t in (ed, es):
                gt[..., t] = MNMS_LABELS[lab]
        save(folder / f"{code}_sa.nii.gz", cine, affine(spacing))
        save(folder / f"{code}_sa_gt.nii.gz", gt, affine(spacing), np.uint8)
        rows.append({"External code": code, "VendorName": {"A": "Siemens", "B": "Philips",
                     "C": "GE"}.get(vendor, vendor), "Vendor": vendor,
                     "Centre": str("ABC".index(vendor) + 1) if vendor in "ABC" else "9",
                     "ED": ed, "ES": es})
    write_mnms_csv(root / "mnms_info.csv", rows)
    return root


def write_mnms_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["External code", "VendorName", "Vendor", "Centre", "ED", "ES"])
        w.writeheader()
        w.writerows(rows)


def write_decathlon(root: Path, n_cases: int = 4, seed: int = 0,
                    labels: tuple[str, ...] = ("left atrium",)) -> Path:
    """Task02_Heart: dataset.json, imagesTr/la_XXX.nii.gz, labelsTr/la_XXX.nii.gz (1 = LA).

    ``labels``: the foreground names of dataset.json; label 1 is the heart's inner cavity,
    2 its wall, 3 the chamber beside it (at most three)."""
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n_cases):
        name = f"la_{i * 2 + 3:03d}"
        shape = (34 + 2 * i, 36, 5 + i % 3)
        img, lab = heart(shape, rng)
        spacing = (1.25, 1.25, 1.37 + 0.2 * i)
        save(root / "imagesTr" / f"{name}.nii.gz", img, affine(spacing))
        mask = np.zeros_like(lab)
        for value, structure in zip(range(1, len(labels) + 1), (3, 2, 1)):
            mask[lab == structure] = value
        save(root / "labelsTr" / f"{name}.nii.gz", mask, affine(spacing), np.uint8)
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    (root / "imagesTs").mkdir(exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "name": "LeftAtrium", "modality": {"0": "MRI"},
        "labels": {"0": "background", **{str(i): n for i, n in enumerate(labels, 1)}},
        "numTraining": n_cases, "training": training, "test": []}, indent=1))
    return root
