"""MLflow tracking, optional at import time (the GPU machine and minimal installs lack it).

Default store: a SQLite file ``mlflow.db`` in the working directory, which ``mlflow ui``
opens; ``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` point it at a server instead.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from fcl_ray.config import Config, flatten, to_dict

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(cfg: Config) -> str:
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class NullTracker:
    """Used when tracking is off: every call is a no-op."""
    run_id: Optional[str] = None

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None: ...
    def log_artifact(self, path: str | Path) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NullTracker):
    """One MLflow run per experiment: params = flattened config, metrics per round."""

    def __init__(self, cfg: Config, tags: Optional[dict[str, Any]] = None):
        import mlflow  # imported here so fcl_ray works without MLflow installed

        self.mlflow = mlflow
        self.client_uri = resolve_uri(cfg)
        mlflow.set_tracking_uri(self.client_uri)
        mlflow.set_experiment(cfg.tracking.experiment or cfg.experiment.name)
        self.run = mlflow.start_run(run_name=cfg.experiment.name, tags=tags)
        self.run_id = self.run.info.run_id
        params = {k: str(v)[:500] for k, v in flatten(to_dict(cfg)).items()}
        mlflow.log_params(params)

    def log_metrics(self, metrics, step=None):
        clean = {k.replace("@", "_"): float(v) for k, v in metrics.items() if v == v}  # drop NaN
        self.mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path):
        self.mlflow.log_artifact(str(path))

    def set_tags(self, tags):
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def end(self, status="FINISHED"):
        self.mlflow.end_run(status=status)


def make_tracker(cfg: Config, tags: Optional[dict[str, Any]] = None) -> NullTracker:
    if not cfg.tracking.enabled:
        return NullTracker()
    return MlflowTracker(cfg, tags)
