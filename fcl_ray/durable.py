"""Outputs that outlive a Ray job.

``ray job submit --working-dir .`` runs the entrypoint inside a temporary copy of the working
dir (``<session>/runtime_resources/working_dir_files/<hash>/``) that Ray deletes with the job;
a RayJob deletes its whole cluster. A relative ``output_dir``, checkpoint dir, sweep
``storage_path`` or ``sqlite:///mlflow.db`` written there vanishes, and ``--resume`` then finds
nothing. :func:`check_durable_outputs` refuses such paths with one line naming the key (the CLI
turns it into exit code 2) before anything runs. Outside a job nothing changes.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.sweep.storage import is_uri
from fcl_ray.tracking import DEFAULT_URI

# Where Ray unpacks a job's uploaded working dir (ray/_private/runtime_env/working_dir.py).
_JOB_WORKING_DIRS = "runtime_resources/working_dir_files/"


def job_working_dir(cwd: Optional[str] = None) -> Optional[str]:
    """The temporary working dir of the Ray job this process runs in, or None."""
    cwd = PurePosixPath(cwd or os.getcwd()).as_posix() + "/"
    start = cwd.find(_JOB_WORKING_DIRS)
    if start < 0:
        return None
    rest = cwd[start + len(_JOB_WORKING_DIRS):].split("/", 1)[0]
    return cwd[:start + len(_JOB_WORKING_DIRS)] + rest


def _is_local_relative(path: str) -> bool:
    """A plain relative path (not absolute, not a URI such as s3://, file://, http://)."""
    return not is_uri(path) and not os.path.isabs(path)


def _relative_sqlite(uri: str) -> bool:
    """sqlite:///mlflow.db (relative) vs sqlite:////abs/mlflow.db (absolute)."""
    return uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/")


def check_durable_outputs(cfg: Config, storage_path: Optional[str] = None,
                          tracking_uri: Optional[str] = None,
                          cwd: Optional[str] = None) -> None:
    """Refuse outputs that would be written inside a job's temporary working dir.

    ``storage_path`` is a sweep's, ``tracking_uri`` the effective MLflow URI when it comes
    from elsewhere than the config (``--tracking-uri``, ``MLFLOW_TRACKING_URI``)."""
    job_dir = job_working_dir(cwd)
    if job_dir is None:
        return
    where = (f"inside this Ray job's temporary working dir {job_dir}, which Ray deletes with "
             f"the job")
    paths = [("experiment.output_dir", cfg.experiment.output_dir),
             ("federation.checkpoint_dir", cfg.federation.checkpoint_dir),
             ("sweep.storage_path", storage_path)]
    for key, value in paths:
        if value and _is_local_relative(value):
            raise ConfigError(f"{key} '{value}' is relative, so its files would land {where}; "
                              f"pass an absolute path on storage every node sees (or a URI), "
                              f"e.g. --set {key}=/mnt/shared/runs/...")
    uri = tracking_uri or cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") \
        or DEFAULT_URI
    if cfg.tracking.enabled and _relative_sqlite(uri):
        raise ConfigError(f"tracking.uri '{uri}' is a relative SQLite file, so the MLflow runs "
                          f"would land {where}; pass a server "
                          f"(--set tracking.uri=http://<host>:5000) or an absolute "
                          f"sqlite:////path, or --set tracking.enabled=false")
