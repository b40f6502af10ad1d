"""Where a run writes, checked before anything starts (before Ray or MLflow): every output
folder is one this process can make and write in, and the MLflow store has a scheme MLflow
knows and, when it is a local file or folder, a writable place. A problem is one
:class:`~fcl_ray.config.ConfigError` naming the key or flag and the path (exit code 2).

What is already *in* an output folder (finished results, a saved config) is
``fcl_ray/output_dir.py``; outputs inside a Ray job's temporary folder, ``fcl_ray/durable.py``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.sweep.storage import is_uri, storage_problem
from fcl_ray.tracking import DEFAULT_URI, tracking_uri_problem, uri_scheme


def folder_problem(path: str | Path) -> Optional[str]:
    """Why ``path`` cannot be an output folder (one line), or None: it is a file, a file
    stands where it would be made, or nothing can be written there. The write is tried (a
    temporary file, removed at once): permission bits say nothing to root or on a
    read-only mount."""
    folder = existing = Path(path)
    try:
        folder = existing = folder.expanduser()
        if folder.exists() and not folder.is_dir():
            return "is a file, not a folder"
        existing = folder
        while not existing.exists():   # the folder is made later: try where it would be
            existing = existing.parent
        if not existing.is_dir():
            return f"cannot be made: '{existing}' is a file"
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".fcl-ray-write-check-")
    except ValueError as err:          # e.g. a NUL byte in the path
        return f"is not a usable path ({err})"
    except OSError as err:
        where = "" if existing == folder else f" ('{existing}')"
        return f"is not writable{where}: {err.strerror or type(err).__name__}"
    os.close(handle)
    os.unlink(probe)
    return None


def path_problem(path: str) -> Optional[str]:
    """:func:`folder_problem` for a local folder; for a URI (s3://, gs://, ...), whether a
    filesystem for its scheme is installed (nothing is written to remote storage here)."""
    return storage_problem(path) if is_uri(path) else folder_problem(path)


def check_folder(what: str, path: str | Path) -> None:
    """ConfigError ``<what> '<path>': <problem>`` unless ``path`` can be an output folder."""
    problem = path_problem(str(path))
    if problem:
        raise ConfigError(f"{what} '{path}': {problem}")


def check_tracking_store(what: str, uri: str) -> None:
    """The MLflow store ``uri``: a known scheme and, for a local SQLite file or folder
    store, a folder that can hold it."""
    problem = tracking_uri_problem(uri)
    if problem is None:
        name = uri_scheme(uri)
        if name == "sqlite" and uri.startswith("sqlite:///") and ":memory:" not in uri:
            database = Path(uri[len("sqlite:///"):])
            problem = ("is a folder, not a database file" if database.is_dir()
                       else folder_problem(database.parent))
        elif name in (None, "file"):
            local = uri[len("file://"):] if name == "file" else uri
            problem = folder_problem(local) if local else None
    if problem:
        raise ConfigError(f"{what} '{uri}': {problem}")


def effective_tracking_uri(cfg: Config, tracking_uri: Optional[str] = None) -> tuple[str, str]:
    """(where it was set, URI) of the MLflow store a run uses: ``--tracking-uri``,
    ``tracking.uri``, ``$MLFLOW_TRACKING_URI`` or the default, first given wins."""
    for what, uri in (("--tracking-uri", tracking_uri), ("config key 'tracking.uri'", cfg.tracking.uri),
                      ("$MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI"))):
        if uri:
            return what, uri
    return "the default MLflow store", DEFAULT_URI


def check_run_outputs(cfg: Config, tracking_uri: Optional[str] = None) -> None:
    """Every place a run writes: ``experiment.output_dir``, the checkpoint folder, the data
    cache and the MLflow store. Called before Ray or MLflow start."""
    check_folder("config key 'experiment.output_dir'", cfg.experiment.output_dir)
    fed, d = cfg.federation, cfg.data
    if fed.checkpoint_every and fed.checkpoint_dir:
        check_folder("config key 'federation.checkpoint_dir'", fed.checkpoint_dir)
    if d.kind != "synthetic" and d.cache and d.cache_dir:
        check_folder("config key 'data.cache_dir'", d.cache_dir)
    if cfg.tracking.enabled:
        check_tracking_store(*effective_tracking_uri(cfg, tracking_uri))
