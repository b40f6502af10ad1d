"""Medical Segmentation Decathlon (Task02_Heart and the other tasks): ``dataset.json``.

Layout (as distributed)::

    dataset.json   {"labels": {"0": "background", "1": "left atrium"},
                    "training": [{"image": "./imagesTr/la_003.nii.gz",
                                  "label": "./labelsTr/la_003.nii.gz"}, ...]}
    imagesTr/  labelsTr/  imagesTs/

Only the ``training`` list has masks, so only it is read. Classes: ``data.classes`` names the
labels to keep (by name or value, e.g. ``[left atrium]``); they become 1..k in that order and
every other label becomes background. Empty keeps every foreground label. The U-Net gets one
output per kept class plus background (``fcl_ray/data/labels.py``). Multi-modal images (4D)
use their first modality.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import (CaseRef, RawFrame, check_image, check_label,
                                         read_nifti, remap)

CARDIAC = False


def _dataset_json(root: Path) -> tuple[Path, dict]:
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))   # -sig: a BOM is fine
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, RecursionError) as err:
        raise DataError(f"{path}: cannot be read ({type(err).__name__})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("training"), list):
        raise DataError(f"{path}: no 'training' list")
    return path, spec


LABEL_MAX = 65_535   # label values of a mask (uint16 at most); a lookup table is this long


def _label_value(text, path: Path, entry: str) -> int:
    """A label value of dataset.json ``labels``: a whole number in [0, LABEL_MAX], as a
    number or as decimal text ("1"); anything else is a DataError naming the entry."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and text.strip().isascii() and text.strip().isdecimal():
        value = int(text)
    else:
        raise DataError(f"{path}: 'labels' entry {entry} has no label value (a whole number), "
                        f"got {str(text)[:40]!r}")
    if not 0 <= value <= LABEL_MAX:
        raise DataError(f"{path}: 'labels' entry {entry}: label value {value} is not in "
                        f"[0, {LABEL_MAX}]")
    return value


def label_table(spec: dict, path: Path, wanted: list[str]) -> tuple[dict[int, int], list[str]]:
    """{file value: project value} and the kept class names, from dataset.json ``labels``."""
    labels = spec.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: no 'labels' mapping")
    # Old format {"1": "left atrium"}; newer nnU-Net style {"left atrium": 1}.
    if all(k.isascii() and k.isdecimal() for k in labels):
        names = {_label_value(k, path, repr(k)): v for k, v in labels.items()}
    else:
        names = {_label_value(v, path, repr(k)): k for k, v in labels.items()}
    bad = next((n for n in names.values() if not isinstance(n, str)), None)
    if bad is not None:
        raise DataError(f"{path}: 'labels' names must be text, got {str(bad)[:40]!r}")
    if len(names) != len(labels):
        raise DataError(f"{path}: 'labels' gives one label value two names")
    foreground = [v for v in sorted(names) if v != 0]
    if wanted:
        by_name = {n.lower(): v for v, n in names.items()}
        keep = []
        for w in wanted:
            value = by_name.get(str(w).lower(),
                                int(w) if w.isascii() and w.isdecimal() else None)
            if value not in foreground:
                raise DataError(f"{path}: data.classes names '{w}', not a foreground label "
                                f"({', '.join(f'{v}={names[v]}' for v in foreground)})")
            keep.append(value)
    else:
        keep = foreground
    table = {v: 0 for v in names}
    table.update({v: i + 1 for i, v in enumerate(keep)})
    return table, [names[v] for v in keep]


def class_names(root: Path, d: DataConfig) -> list[str]:
    """The names of the kept classes (label 1 first), from ``root``'s dataset.json."""
    path, spec = _dataset_json(root)
    return label_table(spec, path, d.classes)[1]


def list_cases(root: Path, d: DataConfig) -> tuple[list[CaseRef], list[DataError]]:
    path, spec = _dataset_json(root)
    table, _ = label_table(spec, path, d.classes)
    cases, problems = [], []
    for i, entry in enumerate(spec["training"]):
        try:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DataError(f"{path}: training entry {i} lacks 'image' or 'label'")
            for what in ("image", "label"):
                value = entry[what]
                if not isinstance(value, str) or not value.strip() or "\0" in value:
                    raise DataError(f"{path}: training entry {i} '{what}' is not a file path, "
                                    f"got {str(value)[:40]!r}")
            image, label = root / entry["image"], root / entry["label"]
            for p, what in ((image, "image"), (label, "mask")):
                if not p.is_file():
                    raise DataError(f"{p}: missing file ({what} listed in {path.name})")
            case_id = image.name.split(".")[0]
            cases.append(CaseRef(case_id=case_id, files=(image, label),
                                 info={"table": table, "dataset_json": path}))
        except DataError as err:
            problems.append(err)
    if not cases and not problems:
        raise DataError(f"{path}: the 'training' list is empty")
    return cases, problems


def load_frames(case: CaseRef, d: DataConfig) -> list[RawFrame]:
    img_path, gt_path = case.files
    import nibabel as nib  # only to peek at the number of axes (multi-modal tasks are 4D)

    try:
        ndim = len(nib.load(str(img_path)).shape)
    except Exception:
        ndim = 3                                   # let read_nifti name the problem
    image, affine = read_nifti(img_path, 4 if ndim == 4 else 3)
    if image.ndim == 4:
        image = np.ascontiguousarray(image[..., 0])   # first modality
    check_image(img_path, image)
    label, _ = read_nifti(gt_path, 3)
    table = case.info["table"]
    found = check_label(gt_path, label, img_path, image.shape, sorted(table))
    return [RawFrame(case.case_id, image, remap(label, table), affine, img_path, found)]
