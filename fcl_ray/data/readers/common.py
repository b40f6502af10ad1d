"""What every reader shares: case references, raw frames, and NIfTI reading with checks.

A reader turns a dataset folder into :class:`CaseRef` objects (cheap: file names and
metadata only, so every client can list the whole dataset and pick its own cases), and one
case into :class:`RawFrame` objects (the voxels, as stored). Preprocessing happens elsewhere
(``fcl_ray/data/preprocess.py``). Every problem is a :class:`DataError` whose message is one
line naming the file and the problem.
"""
from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fcl_ray.data import DataError

# The project's label convention (ACDC's): what every cardiac reader maps its labels to.
CARDIAC_LABELS = (0, 1, 2, 3)          # background, RV cavity, myocardium, LV cavity


@dataclass(frozen=True)
class CaseRef:
    """One patient (case) of a dataset, before any voxel is read."""
    case_id: str
    files: tuple[Path, ...]                        # every file the case reads (cache key)
    site: dict = field(default_factory=dict)       # e.g. {"vendor": "A", "centre": "1"}
    info: dict = field(default_factory=dict)       # reader-specific (frame numbers, paths)


@dataclass
class RawFrame:
    """One 3D frame of a case as stored, labels already in the project's convention."""
    volume_id: str                  # "<case>:<frame>", e.g. "patient001:ED"
    image: np.ndarray               # (X, Y, Z) float32, voxel order of the file (Z = slices)
    label: Optional[np.ndarray]     # (X, Y, Z) uint8, or None for an unlabeled extra frame
    affine: np.ndarray              # 4x4 voxel -> world (mm), from the image header
    source: Path                    # the image file, for messages and reports
    raw_labels: tuple[int, ...] = ()  # label values found in the file, before any remapping


def frame_number(text: str, first: int) -> int:
    """A frame number of a metadata file (ACDC ``Info.cfg``: 1-based; M&Ms CSV: 0-based):
    a whole number >= ``first`` ("12", or "12.0" as spreadsheets write it); ValueError
    otherwise (NaN, infinity, 1.5, -3, text)."""
    value = float(text)
    if not math.isfinite(value) or value != int(value) or value < first or value > 100_000:
        raise ValueError(text)
    return int(value)


def _read_error(path: Path, err: Exception) -> str:
    """A short reason why nibabel could not read ``path`` (checked after it failed)."""
    if path.name.endswith(".gz"):
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                return "not gzip-compressed, though named .nii.gz"
        try:
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except (EOFError, OSError, zlib.error):
            return "truncated or corrupt compressed data"
    reason = str(err).replace(str(path), "the file")
    return f"not a readable NIfTI file ({type(err).__name__}: {reason})"


def read_nifti(path: Path, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxels (as float32, ``ndim`` dimensions) and affine of a NIfTI file, or a DataError.

    Trailing singleton axes beyond ``ndim`` are dropped ((X, Y, Z, 1) is a 3D volume), a file
    with fewer axes is rejected, and NaN/infinite voxels are rejected.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        img = nib.load(str(path))
        check_header(path, img.shape, img.affine)   # before reading: a header can claim 10^12
        data = np.asarray(img.dataobj)       # reads (and decompresses) every voxel now
    except DataError:
        raise
    except Exception as err:                 # nibabel raises many types; all mean "unreadable"
        raise DataError(f"{path}: {_read_error(path, err)}") from None
    while data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    what = {3: "3D volume (X, Y, slices)", 4: "4D cine (X, Y, slices, frames)"}[ndim]
    if data.ndim != ndim:
        raise DataError(f"{path}: expected a {what}, got {data.ndim}D shape {tuple(data.shape)}")
    if not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{path}: voxel type {data.dtype} is not numeric")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise DataError(f"{path}: contains NaN or infinite voxels")
    return data, np.asarray(img.affine, dtype=np.float64)


MAX_VOXELS = 2**30   # 4 GiB as float32: far above any cardiac cine (a 512² x 20 x 50 is 2.6e8)


def check_header(path: Path, shape: Sequence[int], affine: Optional[np.ndarray]) -> None:
    """What a NIfTI header must say before its voxels are read: a shape with no empty axis
    and at most :data:`MAX_VOXELS` voxels, and an affine (voxel -> mm) that is finite with
    an invertible 3x3 part (an all-zero affine gives no orientation and no voxel size)."""
    if any(n < 1 for n in shape):
        raise DataError(f"{path}: header shape {tuple(shape)} has an empty axis")
    if math.prod(shape) > MAX_VOXELS:
        raise DataError(f"{path}: header shape {tuple(shape)} is {math.prod(shape):.2g} voxels, "
                        f"more than {MAX_VOXELS:.2g} (no medical image this platform reads)")
    if affine is None:   # nibabel gives None only for files without any orientation
        raise DataError(f"{path}: header has no affine (voxel-to-mm orientation)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(f"{path}: header affine is not a finite 4x4 matrix")
    if not abs(np.linalg.det(affine[:3, :3])) > 1e-12:
        raise DataError(f"{path}: header affine is singular (e.g. all zeros): no voxel size or "
                        f"orientation can be read; fix the file's qform/sform")


def check_image(path: Path, image: np.ndarray) -> None:
    """Reject a volume (or frame) with no contrast: normalisation would divide by zero."""
    if image.size == 0 or float(image.max()) == float(image.min()):
        value = float(image.flat[0]) if image.size else float("nan")
        raise DataError(f"{path}: constant image (every voxel is {value:g})")


def check_label(path: Path, label: np.ndarray, image_path: Path, image_shape: Sequence[int],
                allowed: Sequence[int]) -> tuple[int, ...]:
    """Check a mask against its image and the allowed values; return the values found."""
    if tuple(label.shape) != tuple(image_shape):
        raise DataError(f"{path}: mask shape {tuple(label.shape)} does not match image shape "
                        f"{tuple(image_shape)} of {image_path.name}")
    if not np.array_equal(label, np.round(label)):
        raise DataError(f"{path}: mask has non-integer values")
    found = tuple(int(v) for v in np.unique(label))
    bad = sorted(set(found) - set(allowed))
    if bad:
        raise DataError(f"{path}: unexpected label values {bad}; expected a subset of "
                        f"{sorted(allowed)}")
    return found


def remap(label: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Map label values through ``table`` (values not in it become background)."""
    lut = np.zeros(max(max(table), int(label.max(initial=0))) + 1, np.uint8)
    for src, dst in table.items():
        lut[src] = dst
    return lut[label.astype(np.int64)]


def phases(d) -> tuple[str, ...]:
    """The labeled cardiac phases to read, from ``data.phases`` (ed, es or ed_es)."""
    return {"ed": ("ED",), "es": ("ES",), "ed_es": ("ED", "ES")}[d.phases]


def pick_extra_frames(n_frames: int, labeled: Sequence[int], count: int) -> list[int]:
    """``count`` frame indices spread evenly over a cine, avoiding the labeled ones."""
    others = [t for t in range(n_frames) if t not in set(labeled)]
    if count <= 0 or not others:
        return []
    if count >= len(others):
        return others
    picks = np.linspace(0, len(others) - 1, count).round().astype(int)
    return [others[i] for i in sorted(set(picks.tolist()))]
