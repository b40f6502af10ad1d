"""M&Ms (multi-centre, multi-vendor): 4D short-axis cines, masks at ED and ES, metadata CSV.

Layout (as distributed)::

    Training/Labeled/A0S9V9/A0S9V9_sa.nii.gz      (X, Y, Z, T) cine
    Training/Labeled/A0S9V9/A0S9V9_sa_gt.nii.gz   (X, Y, Z, T), labels only at ED and ES
    ...Validation/..., Testing/...
    <metadata>.csv    columns External code, VendorName, Vendor, Centre, ED, ES

ED and ES in the CSV are 0-based frame indices. M&Ms labels are 1 LV, 2 myocardium, 3 RV;
they are remapped to the project's 1 RV, 2 myocardium, 3 LV. Vendor and centre make the
natural sites (``data.split=by_site``, ``data.sites_by=vendor|centre``).
"""
from __future__ import annotations

import csv
from pathlib import Path

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import (CARDIAC_LABELS, CaseRef, RawFrame, check_image,
                                         check_label, frame_number, phases, pick_extra_frames,
                                         read_nifti, remap)

CARDIAC = True
TO_PROJECT = {0: 0, 1: 3, 2: 2, 3: 1}      # M&Ms LV/myo/RV -> project RV/myo/LV
COLUMNS = ("External code", "Vendor", "Centre", "ED", "ES")


def _metadata_path(root: Path, d: DataConfig) -> Path:
    if d.metadata:
        path = Path(d.metadata)
        if not path.is_file():
            raise DataError(f"{path}: missing file (data.metadata)")
        return path
    found = sorted(root.rglob("*.csv"))
    if len(found) != 1:
        raise DataError(f"{root}: expected one metadata *.csv (External code, Vendor, Centre, "
                        f"ED, ES), found {len(found)}; set data.metadata")
    return found[0]


def read_metadata(path: Path) -> dict[str, dict[str, str]]:
    """{case code: row} from the metadata CSV, with its columns checked; a file that is not
    a UTF-8 CSV is one DataError naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, restval="")   # short rows: empty cells
            fields = [f.strip() for f in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in fields]
            if missing:
                raise DataError(f"{path}: missing columns {', '.join(missing)}")
            rows = {}
            for row in reader:   # cells beyond the header come as a list under key None
                row = {(k or "").strip(): v.strip() for k, v in row.items()
                       if isinstance(v, str)}
                if row.get("External code"):
                    rows[row["External code"]] = row
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except (csv.Error, OSError) as err:
        raise DataError(f"{path}: not a readable CSV ({str(err)[:80]})") from None
    return rows


def list_cases(root: Path, d: DataConfig) -> tuple[list[CaseRef], list[DataError]]:
    """Every folder holding a ``<code>_sa.nii.gz`` (or its ``_sa_gt``) under ``root``."""
    meta_path = _metadata_path(root, d)
    meta = read_metadata(meta_path)
    folders = {p.parent for p in root.rglob("*_sa.nii.gz")} | \
              {p.parent for p in root.rglob("*_sa_gt.nii.gz")}
    if not folders:
        raise DataError(f"{root}: no M&Ms '<code>/<code>_sa.nii.gz' files found")
    cases, problems = [], []
    for folder in sorted(folders, key=lambda p: p.name):
        try:
            cases.append(_case(folder, meta, meta_path))
        except DataError as err:
            problems.append(err)
    return cases, problems


def _frame(row: dict, key: str, meta_path: Path, code: str) -> int:
    try:
        return frame_number(row[key], first=0)
    except ValueError:
        raise DataError(f"{meta_path}: case '{code}' has {key}={row[key][:40]!r}, "
                        f"not a frame index (a whole number >= 0)") from None


def _case(folder: Path, meta: dict, meta_path: Path) -> CaseRef:
    code = folder.name
    image, mask = folder / f"{code}_sa.nii.gz", folder / f"{code}_sa_gt.nii.gz"
    for path, what in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            raise DataError(f"{path}: missing file ({what} of case {code})")
    if code not in meta:
        raise DataError(f"{meta_path}: no row for case '{code}'")
    row = meta[code]
    return CaseRef(case_id=code, files=(image, mask),
                   site={"vendor": row["Vendor"], "centre": row["Centre"]},
                   info={"ED": _frame(row, "ED", meta_path, code),
                         "ES": _frame(row, "ES", meta_path, code), "metadata": meta_path})


def load_frames(case: CaseRef, d: DataConfig) -> list[RawFrame]:
    """ED and/or ES frames (``data.phases``) with masks (remapped), then
    ``data.extra_frames`` unlabeled ones."""
    img_path, gt_path = case.files
    cine, affine = read_nifti(img_path, 4)
    gt, _ = read_nifti(gt_path, 4)
    n = cine.shape[3]
    if gt.shape != cine.shape:
        raise DataError(f"{gt_path}: mask shape {gt.shape} does not match image shape "
                        f"{cine.shape} of {img_path.name}")
    frames = []
    for phase in ("ED", "ES"):
        t = case.info[phase]
        if not 0 <= t < n:
            raise DataError(f"{case.info['metadata']}: case '{case.case_id}' {phase}={t} is "
                            f"outside the {n} frames of {img_path.name}")
    for phase in phases(d):
        t = case.info[phase]
        if phase == "ES" and "ED" in phases(d) and t == case.info["ED"]:
            continue
        image = cine[..., t]
        check_image(img_path, image)
        found = check_label(gt_path, gt[..., t], img_path, image.shape, CARDIAC_LABELS)
        frames.append(RawFrame(f"{case.case_id}:{phase}", image, remap(gt[..., t], TO_PROJECT),
                               affine, img_path, found))
    labeled = [case.info["ED"], case.info["ES"]]
    for t in pick_extra_frames(n, labeled, d.extra_frames):
        check_image(img_path, cine[..., t])
        frames.append(RawFrame(f"{case.case_id}:t{t:02d}", cine[..., t], None, affine, img_path))
    return frames
