"""Shared fixtures: one local Ray for the whole session (2 CPUs), tiny configs."""
from __future__ import annotations

import pytest

from mlflow_server import mlflow_server  # noqa: F401  (a fixture for every test folder)

TINY = [
    "data.clients=2", "data.cases_per_client=4", "data.folds=2", "data.image_size=32",
    "data.slices_min=4", "data.slices_max=5", "data.partitions=2",
    "model.features=[8,8,16,16,16,8]", "model.projection_hidden=32", "model.projection_dim=16",
    "pretrain.rounds=2", "pretrain.local_steps=2", "pretrain.volumes_per_batch=2",
    "pretrain.bank_size=16", "pretrain.sample_size=24", "pretrain.exchange_size=8",
    "finetune.steps=3", "finetune.rounds=2", "finetune.local_steps=2", "finetune.batch_size=4",
    # A fixed step budget, also over the quickstart's budget=converge: tiny runs stay seconds
    # long and comparable; convergence has its own tests (test_early_stopping, test_driver).
    "finetune.budget=steps",
]


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # The dashboard serves Ray's state API (a sweep trial's placement check reads it).
    ray.init(num_cpus=2, include_dashboard=True, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_overrides(tmp_path):
    """--set overrides for a federation that runs in seconds, writing under tmp_path."""
    return TINY + [f"experiment.output_dir={tmp_path / 'out'}",
                   f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
