"""ACDC: ``patientXXX/`` folders with ``Info.cfg`` and the ED/ES frames and their masks.

Layout (as distributed)::

    patient001/Info.cfg                     ED: 1 / ES: 12 / Group: DCM / NbFrame: 30 ...
    patient001/patient001_4d.nii.gz         every frame (X, Y, Z, T), unlabeled
    patient001/patient001_frame01.nii.gz    ED frame, and patient001_frame01_gt.nii.gz
    patient001/patient001_frame12.nii.gz    ES frame, and patient001_frame12_gt.nii.gz

Frame numbers in ``Info.cfg`` are 1-based (frame01 is the 4D file's first frame). Labels are
already the project's convention (1 RV, 2 myocardium, 3 LV). ACDC has no scanner or centre
metadata; its ``Group`` (pathology) is carried as ``site["group"]`` for ``data.split=by_group``.
"""
from __future__ import annotations

from pathlib import Path

from fcl_ray.config import DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import (CARDIAC_LABELS, CaseRef, RawFrame, check_image,
                                         check_label, frame_number, phases, pick_extra_frames,
                                         read_nifti)

CARDIAC = True
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")   # ACDC's pathology groups (20 training patients each)


def _read_info(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    info = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _frame_number(info: dict, key: str, path: Path) -> int:
    if key not in info:
        raise DataError(f"{path}: no '{key}:' line (the {key} frame number)")
    try:
        return frame_number(info[key], first=1)
    except ValueError:
        raise DataError(f"{path}: '{key}: {info[key][:40]}' is not a frame number (a whole "
                        f"number >= 1; frames count from 1)") from None


def list_cases(root: Path, d: DataConfig) -> tuple[list[CaseRef], list[DataError]]:
    """Every ``patient*`` folder under ``root`` (searched recursively: training/, testing/)."""
    folders = sorted((p for p in root.rglob("patient*") if p.is_dir()), key=lambda p: p.name)
    if not folders:
        raise DataError(f"{root}: no ACDC 'patientXXX/' folders found")
    cases, problems = [], []
    for folder in folders:
        try:
            cases.append(_case(folder, d))
        except DataError as err:
            problems.append(err)
    return cases, problems


def _case(folder: Path, d: DataConfig) -> CaseRef:
    name = folder.name
    cfg_path = folder / "Info.cfg"
    info = _read_info(cfg_path)
    ed, es = _frame_number(info, "ED", cfg_path), _frame_number(info, "ES", cfg_path)
    files = []
    numbers = {"ED": ed, "ES": es}
    for frame in dict.fromkeys(numbers[p] for p in phases(d)):   # ED == ES: read once
        for suffix in ("", "_gt"):
            path = folder / f"{name}_frame{frame:02d}{suffix}.nii.gz"
            if not path.is_file():
                raise DataError(f"{path}: missing file ({'mask' if suffix else 'image'} of "
                                f"frame {frame} named in {cfg_path.name})")
            files.append(path)
    cine = folder / f"{name}_4d.nii.gz"
    if d.extra_frames > 0:
        if not cine.is_file():
            raise DataError(f"{cine}: missing file (needed for data.extra_frames)")
        files.append(cine)
    group = info.get("Group", "")
    if d.split == "by_group" and group not in GROUPS:
        found = f"'Group: {group}' is not an ACDC pathology group" if group else "no 'Group:' line"
        raise DataError(f"{cfg_path}: {found}; data.split=by_group needs one of "
                        f"{', '.join(GROUPS)}")
    return CaseRef(case_id=name, files=tuple(files), site={"group": group} if group else {},
                   info={"ED": ed, "ES": es, "cine": cine})


def load_frames(case: CaseRef, d: DataConfig) -> list[RawFrame]:
    """The ED and/or ES frames (``data.phases``) with masks, then ``data.extra_frames``
    unlabeled cine frames."""
    folder = case.files[0].parent
    frames = []
    for phase in phases(d):
        number = case.info[phase]
        if phase == "ES" and "ED" in phases(d) and number == case.info["ED"]:
            continue
        img_path = folder / f"{case.case_id}_frame{number:02d}.nii.gz"
        gt_path = folder / f"{case.case_id}_frame{number:02d}_gt.nii.gz"
        image, affine = read_nifti(img_path, 3)
        check_image(img_path, image)
        label, _ = read_nifti(gt_path, 3)
        found = check_label(gt_path, label, img_path, image.shape, CARDIAC_LABELS)
        frames.append(RawFrame(f"{case.case_id}:{phase}", image, label.astype("uint8"), affine,
                               img_path, found))
    if d.extra_frames > 0:
        cine, affine = read_nifti(case.info["cine"], 4)
        labeled = [case.info["ED"] - 1, case.info["ES"] - 1]     # 1-based numbers -> indices
        if cine.shape[:3] != frames[0].image.shape:
            raise DataError(f"{case.info['cine']}: frame shape {cine.shape[:3]} does not match "
                            f"the ED frame's {frames[0].image.shape}")
        for t in pick_extra_frames(cine.shape[3], labeled, d.extra_frames):
            image = cine[..., t]
            check_image(case.info["cine"], image)
            frames.append(RawFrame(f"{case.case_id}:t{t + 1:02d}", image, None, affine,
                                   case.info["cine"]))
    return frames
