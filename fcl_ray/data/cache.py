"""On-disk cache of preprocessed cases, so a second run does not resample again.

One ``.npz`` per case, named by a hash of the case's file contents and of the preprocessing
settings (and a version number bumped when preprocessing changes), so a changed file or
setting simply misses. Writes go to a temporary file first and are renamed into place, so a
crash never leaves a half-written entry. Deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from fcl_ray.config import DataConfig
from fcl_ray.data.readers.common import CaseRef
from fcl_ray.data.synthetic import Volume

VERSION = 1   # bump when preprocess.py changes what it produces


def cache_dir(d: DataConfig) -> Path:
    if d.cache_dir:
        return Path(d.cache_dir)
    if os.environ.get("FCL_RAY_CACHE"):
        return Path(os.environ["FCL_RAY_CACHE"])
    return Path.home() / ".cache" / "fcl-ray"


def case_key(case: CaseRef, d: DataConfig) -> str:
    """Hash of every file the case reads and of the settings that shape its volumes."""
    h = hashlib.sha256()
    settings = {"version": VERSION, "kind": d.kind, "spacing": d.spacing,
                "orientation": d.orientation, "image_size": d.image_size, "crop": d.crop,
                "phases": d.phases,    # M&Ms reads ED/ES from the same 4D files either way
                "extra_frames": d.extra_frames, "classes": d.classes,
                "frames": {k: v for k, v in case.info.items() if isinstance(v, (int, str))}}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for path in case.files:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def load(d: DataConfig, key: str) -> Optional[list[Volume]]:
    path = cache_dir(d) / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            return [Volume(n, z[f"image{i}"], z[f"label{i}"] if f"label{i}" in z else None)
                    for i, n in enumerate(names)]
    except Exception:          # a damaged entry is a miss; it is rewritten below
        return None


def store(d: DataConfig, key: str, volumes: list[Volume]) -> None:
    folder = cache_dir(d)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"names": np.array([v.volume_id for v in volumes])}
    for i, v in enumerate(volumes):
        arrays[f"image{i}"] = v.image
        if v.label is not None:
            arrays[f"label{i}"] = v.label
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, folder / f"{key}.npz")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
