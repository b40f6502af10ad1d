"""Every experiment file in experiments/ loads and passes the config checks, so a recipe that
is only run on a GPU machine (or once a session) cannot rot unnoticed."""
from pathlib import Path

import pytest

from fcl_ray.config_io import load_config

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))


def test_there_are_experiment_files():
    assert len(EXPERIMENTS) >= 8


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_file_loads(path):
    cfg = load_config(str(path), [])
    assert cfg.experiment.name and cfg.pretrain.methods and cfg.finetune.n_labeled
