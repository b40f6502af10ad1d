"""A federation pre-trains on the cine phantom's extra frames and fine-tunes on ED/ES."""
from __future__ import annotations

import pandas as pd
import pytest

from fcl_ray.config_io import load_config


@pytest.mark.integration
def test_federation_with_extra_frames_runs(ray_session, tiny_overrides, tmp_path):
    from fcl_ray.federation.driver import run_experiment

    cfg = load_config(None, tiny_overrides + [
        "data.phases=ed_es", "data.extra_frames=2", "pretrain.rounds=1",
        "pretrain.methods=[fcl]", "tracking.enabled=false"])
    run_experiment(cfg, log=lambda line: None)
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(results["client"].unique()) == [0, 1]
    assert results["dice_mean"].between(0, 1).all()
