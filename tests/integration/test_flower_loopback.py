"""The same tiny FCL study on a real Flower deployment (127.0.0.1, TLS, SuperNode
authentication, two SuperNodes) and on Ray: the rows, and the same global weights.

Bitwise, not within a tolerance: both runtimes call the same ClientSite with the same seeds
and one torch thread per site, the Flower site restores exactly what the Ray actor keeps in
memory between rounds (the method's checkpoint state, the trainer), and FedAvg sums the
updates in site order in both."""
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("flwr", reason="the Flower runtime needs the 'flower' extra")

from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.federation.checkpoint import COORDINATOR_FILE, CheckpointStore  # noqa: E402
from fcl_ray.federation.driver import run_experiment  # noqa: E402
from fcl_ray.flower.deploy import write_deployment  # noqa: E402
from fcl_ray.results import RESULT_COLUMNS  # noqa: E402

from conftest import TINY  # noqa: E402
from flower_loopback import federation, free_port, run_study  # noqa: E402

pytestmark = pytest.mark.integration

STUDY = TINY + ["pretrain.methods=[fcl]", "finetune.modes=[federated]", "finetune.rounds=1",
                "federation.num_cpus_per_client=1", "federation.checkpoint_every=1",
                "tracking.enabled=false"]


def _global_state(out) -> dict:
    """The coordinator's state after the last pre-training round (weights, feature pool)."""
    store = CheckpointStore(str(out / "checkpoints"))
    return store.load_arrays(f"{store.round_dir('fcl-fold0', 2)}/{COORDINATOR_FILE}")


def test_a_tiny_study_on_loopback_flower_gives_rays_rows_and_weights(ray_session, tmp_path):
    cfg = load_config(None, STUDY + [f"experiment.output_dir={tmp_path / 'flower'}"])
    roots = {}
    for site in range(cfg.data.clients):
        (tmp_path / f"site-{site}").mkdir()
        roots[site] = str(tmp_path / f"site-{site}")
    port, deployment = free_port(), tmp_path / "deployment"
    write_deployment(cfg, deployment, "127.0.0.1", port, roots, bind="127.0.0.1",
                     supernode_port=free_port())
    with federation(deployment, cfg.data.clients, port):
        run = run_study(deployment, timeout=480)
    out = tmp_path / "flower"
    assert run.returncode == 0 and (out / "results.csv").is_file(), run.stdout[-3000:]
    assert "sites joined: site 0 = node" in run.stdout

    rows = pd.read_csv(out / "results.csv")
    assert list(rows.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert rows[["method", "finetune_mode", "n_labeled", "fold"]].drop_duplicates().values.tolist() \
        == [["fcl", "federated", 1, 0]]
    assert rows["client"].tolist() == [0, 1] and rows["dice_mean"].between(0, 1).all()
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    pretrain = [r for r in rounds if r["phase"] == "pretrain"]
    assert [r["participants"] for r in pretrain] == [[0, 1], [0, 1]]
    assert pretrain[1]["bytes_features"] > 0 and not pretrain[1]["dropped"]
    # Each site's bank, optimiser and networks on its own disk; the coordinator's checkpoints
    # hold global state only.
    for site in range(cfg.data.clients):
        state = tmp_path / f"site-{site}" / "fcl-ray-state" / cfg.experiment.name
        assert (state / "pretrain" / "fcl-fold0" / f"client-{site}.pt").is_file()
        assert (state / "encoders" / "fcl-fold0.pt").is_file()
    assert not list((out / "checkpoints").rglob("client-*"))

    ray_cfg = load_config(None, STUDY + [f"experiment.output_dir={tmp_path / 'ray'}"])
    ray_rows = run_experiment(ray_cfg, log=lambda line: None)
    flower_state, ray_state = _global_state(out), _global_state(tmp_path / "ray")
    assert sorted(flower_state) == sorted(ray_state)
    for name in ray_state:   # global weights, each site's shared features and labels
        assert np.array_equal(flower_state[name], ray_state[name]), name
    dice = [c for c in RESULT_COLUMNS if c.startswith("dice")]
    assert rows[dice].values.tolist() == ray_rows[dice].values.tolist()


def test_a_site_without_its_data_root_refuses_at_its_supernode(tmp_path):
    """Bad input at a site: its SuperNode refuses before any data is read, and the study
    stops with one line naming the site and the folder (coordinator/run.sh exits 2)."""
    cfg = load_config(None, STUDY + [f"experiment.output_dir={tmp_path / 'out'}"])
    (tmp_path / "site-0").mkdir()
    port, deployment = free_port(), tmp_path / "deployment"
    write_deployment(cfg, deployment, "127.0.0.1", port,
                     {0: str(tmp_path / "site-0"), 1: str(tmp_path / "nowhere")},
                     bind="127.0.0.1", supernode_port=free_port())
    with federation(deployment, cfg.data.clients, port):
        run = run_study(deployment, timeout=240)
    assert run.returncode == 2, run.stdout[-3000:]
    said = [line for line in run.stdout.splitlines() if line.startswith("fcl-ray: error:")]
    assert len(said) == 1 and "refused: site 1: data-root" in said[0] \
        and f"{tmp_path / 'nowhere'}' does not exist" in said[0]
    assert not (tmp_path / "out" / "results.csv").exists()
