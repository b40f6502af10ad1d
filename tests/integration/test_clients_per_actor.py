"""Several logical clients per actor give the same federation as one actor per client."""
import pandas as pd
import pytest
import torch

from fcl_ray.config_io import load_config
from fcl_ray.federation.driver import run_experiment

pytestmark = pytest.mark.integration


def _run(overrides, out):
    cfg = load_config(None, overrides + [f"experiment.output_dir={out}", "data.clients=3",
                                         "tracking.enabled=false", "federation.checkpoint_every=1",
                                         "finetune.modes=[local,federated]"])
    reports = []
    results = run_experiment(cfg, log=lambda line: None, reporter=reports.append)
    return results, torch.load(out / "encoders" / "fcl-fold0.pt"), reports


def test_same_seeds_same_final_weights_with_two_clients_per_actor(ray_session, tiny_overrides,
                                                                  tmp_path):
    alone, alone_encoder, _ = _run(tiny_overrides, tmp_path / "alone")
    hosted, hosted_encoder, reports = _run(tiny_overrides + ["federation.clients_per_actor=2"],
                                           tmp_path / "hosted")
    assert alone_encoder.keys() == hosted_encoder.keys()
    for name in alone_encoder:
        assert torch.equal(alone_encoder[name], hosted_encoder[name]), name
    key = ["method", "finetune_mode", "n_labeled", "client"]
    timing = [c for c in alone if "seconds" in c]   # wall times differ, everything else not

    def rows(frame):
        return frame.drop(columns=timing).sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(alone), rows(hosted), check_exact=True)

    # Three clients on two actors (2 + 1), every client answered every round.
    ready = next(r for r in reports if r.phase == "ready")
    handles = ready.client_handles
    assert len(handles) == 3 and len({h._actor_id for h in handles}) == 2
    rounds = [r for r in reports if r.phase == "pretrain"]
    assert all(r.clients_participated == 3 for r in rounds)


def test_client_actors_do_not_load_what_they_do_not_use(ray_session, tiny_overrides):
    import ray

    from fcl_ray.federation.cluster import actor_handles, create_federation
    from fcl_ray.federation.lean import NOT_IN_ACTORS

    cfg = load_config(None, tiny_overrides)
    clients, coordinator = create_federation(cfg)
    try:
        for breakdown in ray.get([c.breakdown.remote() for c in clients]):
            assert breakdown["unneeded_modules_loaded"] == []
            assert breakdown["import_seconds"] > 0 and breakdown["rss_after_data_mb"] > 0
    finally:
        for actor in actor_handles(clients) + [coordinator]:
            ray.kill(actor)
    assert "mlflow" in NOT_IN_ACTORS
