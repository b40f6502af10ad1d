"""Real datasets on disk: list cases, assign them to clients, load one client's volumes.

Each reader module (``acdc``, ``mnms``, ``decathlon``) provides ``list_cases(root, d)``
(cheap: names and metadata) and ``load_frames(case, d)`` (the voxels), plus ``CARDIAC``
(whether base-to-apex ordering applies). This module ties them to the client assignment
(``fcl_ray/data/sites.py``), the preprocessing and the cache, and turns per-case problems into
either one DataError (default) or, with ``data.skip_bad_cases``, a warning listing them.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

from fcl_ray.config import Config, DataConfig
from fcl_ray.data import DataError
from fcl_ray.data.readers.common import CaseRef, RawFrame
from fcl_ray.data.synthetic import Volume

KINDS = ("acdc", "mnms", "decathlon")


def get_reader(kind: str) -> ModuleType:
    if kind not in KINDS:
        raise DataError(f"data.kind '{kind}' has no reader; readers: {', '.join(KINDS)}")
    return importlib.import_module(f"fcl_ray.data.readers.{kind}")


def _root(path: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    return root


def _handle(problems: list[DataError], d: DataConfig) -> None:
    """Raise the first problem, or (skip_bad_cases) warn once, listing every skipped case."""
    if not problems:
        return
    if not d.skip_bad_cases:
        raise problems[0]
    warnings.warn(f"skipping {len(problems)} bad case(s) (data.skip_bad_cases):\n  "
                  + "\n  ".join(str(p) for p in problems), stacklevel=3)


def client_cases(d: DataConfig) -> tuple[list[list[CaseRef]], list[str]]:
    """Every client's cases (listing only; no voxels read) and where each client's data is."""
    reader = get_reader(d.kind)
    if d.client_roots:
        groups, wheres = [], []
        for path in d.client_roots:
            cases, problems = reader.list_cases(_root(path), d)
            _handle(problems, d)
            groups.append(sorted(cases, key=lambda c: c.case_id))
            wheres.append(path)
        return groups, wheres
    from fcl_ray.data.sites import assign_clients

    root = _root(d.root)
    cases, problems = reader.list_cases(root, d)
    _handle(problems, d)
    return assign_clients(cases, d, str(root)), [str(root)] * d.clients


def one_client_cases(d: DataConfig, client: int) -> list[CaseRef]:
    """Client ``client``'s cases; with client_roots only its own folder is listed."""
    if d.client_roots:
        reader = get_reader(d.kind)
        cases, problems = reader.list_cases(_root(d.client_roots[client]), d)
        _handle(problems, d)
        return sorted(cases, key=lambda c: c.case_id)
    return client_cases(d)[0][client]


@dataclass
class LoadedCase:
    case: CaseRef
    volumes: list[Volume]
    frames: Optional[list[RawFrame]] = None   # raw frames, when asked for (data check)


def load_case(case: CaseRef, d: DataConfig, keep_frames: bool = False) -> LoadedCase:
    """One case's preprocessed volumes, from the cache when possible; checks slice counts."""
    from fcl_ray.data import cache
    from fcl_ray.data.preprocess import preprocess_case

    reader = get_reader(d.kind)
    key = cache.case_key(case, d) if d.cache else None
    volumes = cache.load(d, key) if key else None
    frames = None
    if volumes is None or keep_frames:
        frames = reader.load_frames(case, d)
    if volumes is None:
        volumes = preprocess_case(frames, d, reader.CARDIAC)
        if key:
            cache.store(d, key, volumes)
    for v in volumes:
        if len(v.image) < d.partitions:
            raise DataError(f"{case.files[0]}: {len(v.image)} slices, fewer than "
                            f"data.partitions={d.partitions}")
    return LoadedCase(case, volumes, frames)


def check_counts(n_cases: int, client: int, where: str, cfg: Config) -> None:
    """A client needs a test fold per data.folds and room for the largest label budget."""
    d = cfg.data
    if n_cases < d.folds:
        raise DataError(f"{where}: client {client} has {n_cases} cases, fewer than "
                        f"data.folds={d.folds}")
    train = n_cases - -(-n_cases // d.folds)
    n_max = max(cfg.finetune.n_labeled)
    if n_max > train:
        raise DataError(f"{where}: client {client} has {n_cases} cases, {train} for training "
                        f"with data.folds={d.folds}; finetune.n_labeled={n_max} is too many")


def load_client(cfg: Config, client: int) -> list[Volume]:
    """Client ``client``'s volumes: labeled ones (case order), then unlabeled extra frames."""
    d = cfg.data
    cases = one_client_cases(d, client)
    where = d.client_roots[client] if d.client_roots else str(d.root)
    loaded, problems = [], []
    for case in cases:
        try:
            loaded.append(load_case(case, d))
        except DataError as err:
            problems.append(err)
    _handle(problems, d)
    check_counts(len(loaded), client, where, cfg)
    volumes = [v for lc in loaded for v in lc.volumes]
    # Labeled volumes first so that volume order and case order agree for the labeled part.
    return [v for v in volumes if v.label is not None] + [v for v in volumes if v.label is None]
