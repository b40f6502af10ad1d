"""The same tiny FCL study on a real Flower deployment (127.0.0.1, TLS, SuperNode
authentication, two SuperNodes) and on Ray: the rows, the same global weights and the same
privacy epsilons (FedProx, the Gaussian mechanism on the shared features, fine-tuning to
convergence); a SuperNode killed mid-run is dropped and rejoins; a site without its data
refuses.

Bitwise, not within a tolerance: both runtimes call the same ClientSite with the same seeds
and one torch thread per site, the Flower site restores exactly what the Ray actor keeps in
memory between rounds (the method's checkpoint state, the trainer), and FedAvg sums the
updates in site order in both."""
import json
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("flwr", reason="the Flower runtime needs the 'flower' extra")

from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.federation.checkpoint import COORDINATOR_FILE, CheckpointStore  # noqa: E402
from fcl_ray.federation.driver import run_experiment  # noqa: E402
from fcl_ray.flower.deploy import write_deployment  # noqa: E402
from fcl_ray.machine import MACHINE_FILE  # noqa: E402
from fcl_ray.results import RESULT_COLUMNS  # noqa: E402

from conftest import TINY  # noqa: E402
from flower_loopback import (federation, finish_study, run_study, start_study,  # noqa: E402
                             stop_study)
from ports import free_port  # noqa: E402

pytestmark = pytest.mark.integration

STUDY = TINY + ["pretrain.methods=[fcl]", "finetune.modes=[federated]", "finetune.rounds=1",
                "federation.num_cpus_per_client=1", "federation.checkpoint_every=1",
                "tracking.enabled=false",
                # A round's config (FedProx's mu) reaches the sites; the sites noise their
                # shared features and the coordinator accounts each one's epsilon.
                "federation.strategy=fedprox", "federation.proximal_mu=0.01",
                "privacy.feature_noise_multiplier=2.0"]
# Early stopping on validation Dice, federated (2 rounds, validated after each) and local.
CONVERGE = ["finetune.budget=converge", "finetune.modes=[federated,local]",
            "finetune.max_steps=4", "finetune.eval_every=2", "finetune.patience=1"]


def _global_state(out) -> dict:
    """The coordinator's state after the last pre-training round (weights, feature pool)."""
    store = CheckpointStore(str(out / "checkpoints"))
    return store.load_arrays(f"{store.round_dir('fcl-fold0', 2)}/{COORDINATOR_FILE}")


def _deployment(cfg, tmp_path, roots=None):
    """``fcl-ray deploy`` of ``cfg`` on 127.0.0.1 into ``tmp_path/deployment`` (default data
    roots: a new folder per site); (its folder, the SuperLink's port)."""
    if roots is None:
        roots = {site: tmp_path / f"site-{site}" for site in range(cfg.data.clients)}
        for root in roots.values():
            root.mkdir()
    port, deployment = free_port(), tmp_path / "deployment"
    write_deployment(cfg, deployment, "127.0.0.1", port,
                     {site: str(root) for site, root in roots.items()}, bind="127.0.0.1",
                     supernode_port=free_port())
    return deployment, port


def _rounds(out) -> list[dict]:
    path = out / "rounds.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_a_tiny_study_on_loopback_flower_gives_rays_rows_and_weights(ray_session, tmp_path):
    cfg = load_config(None, STUDY + CONVERGE + [f"experiment.output_dir={tmp_path / 'flower'}"])
    deployment, port = _deployment(cfg, tmp_path)
    with federation(deployment, cfg.data.clients, port):
        run = run_study(deployment, timeout=480)
    out = tmp_path / "flower"
    assert run.returncode == 0 and (out / "results.csv").is_file(), run.stdout[-3000:]
    assert "sites joined: site 0 = node" in run.stdout
    # Where each site computed, as `fcl-ray run` records its clients (machine.json).
    assert "fcl-ray: clients on 1 machine setup(s): " in run.stdout
    [start] = json.loads((out / MACHINE_FILE).read_text())
    assert not start["resumed"] and [g["clients"] for g in start["machines"]] == [[0, 1]]
    assert start["machines"][0]["torch_threads"] == 1

    rows = pd.read_csv(out / "results.csv")
    assert list(rows.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert rows[["method", "finetune_mode", "n_labeled", "fold"]].drop_duplicates().values.tolist() \
        == [["fcl", "federated", 1, 0], ["fcl", "local", 1, 0]]
    assert rows["client"].tolist() == [0, 1, 0, 1] and rows["dice_mean"].between(0, 1).all()
    assert rows["best_step"].isin([2, 4]).all() and rows["val_dice"].between(0, 1).all()
    pretrain = [r for r in _rounds(out) if r["phase"] == "pretrain"]
    assert [r["participants"] for r in pretrain] == [[0, 1], [0, 1]]
    assert pretrain[1]["bytes_features"] > 0 and not pretrain[1]["dropped"]
    epsilons = [r["privacy"]["epsilon"] for r in pretrain]
    assert 0 < epsilons[0]["0"] < epsilons[1]["0"] and sorted(epsilons[1]) == ["0", "1"]
    # Each site's bank, optimiser and networks on its own disk; the coordinator's checkpoints
    # hold global state only.
    for site in range(cfg.data.clients):
        state = tmp_path / f"site-{site}" / "fcl-ray-state" / cfg.experiment.name
        # per round, from the coordinator's last checkpoint (round 1) on: what a resume needs
        phase = state / "pretrain" / "fcl-fold0"
        assert sorted(p.relative_to(phase).as_posix() for p in phase.rglob("*.pt")) == \
            [f"round-0001/client-{site}.pt", f"round-0002/client-{site}.pt"]
        assert (state / "encoders" / "fcl-fold0.pt").is_file()
    assert not list((out / "checkpoints").rglob("client-*"))

    _assert_rays(out, tmp_path / "ray", CONVERGE)


def _assert_rays(out, ray_out, overrides=()) -> None:
    """The Flower study in ``out`` ends with the Ray runtime's global state, Dice (and
    early stopping's steps) and privacy epsilons, bit for bit (the Ray run of the same
    study, ``STUDY + overrides``, is made here, in ``ray_out``)."""
    ray_rows = run_experiment(load_config(None, [*STUDY, *overrides,
                                                 f"experiment.output_dir={ray_out}"]),
                              log=lambda line: None)
    flower_state, ray_state = _global_state(out), _global_state(ray_out)
    assert sorted(flower_state) == sorted(ray_state)
    for name in ray_state:   # global weights, each site's shared features and labels
        assert np.array_equal(flower_state[name], ray_state[name]), name
    scores = [c for c in RESULT_COLUMNS if c.startswith("dice")] + \
        [c for c in ("steps", "best_step", "val_dice") if c in ray_rows.columns]
    rows = pd.read_csv(out / "results.csv")
    assert rows[scores].values.tolist() == ray_rows[scores].values.tolist()
    # privacy.json: each site's epsilon, releases and noise, as the Ray driver wrote them
    assert json.loads((out / "privacy.json").read_text()) == \
        json.loads((ray_out / "privacy.json").read_text())
    assert [r["privacy"] for r in _rounds(out) if r["phase"] == "pretrain"] == \
        [r["privacy"] for r in _rounds(ray_out)]


def test_a_site_without_its_data_root_refuses_at_its_supernode(tmp_path):
    """Bad input at a site: its SuperNode refuses before any data is read, and the study
    stops with one line naming the site and the folder (coordinator/run.sh exits 2)."""
    cfg = load_config(None, STUDY + [f"experiment.output_dir={tmp_path / 'out'}"])
    (tmp_path / "site-0").mkdir()
    deployment, port = _deployment(cfg, tmp_path, {0: tmp_path / "site-0",
                                                   1: tmp_path / "nowhere"})
    with federation(deployment, cfg.data.clients, port):
        run = run_study(deployment, timeout=240)
    assert run.returncode == 2, run.stdout[-3000:]
    said = [line for line in run.stdout.splitlines() if line.startswith("fcl-ray: error:")]
    assert len(said) == 1 and "refused: site 1: data-root" in said[0] \
        and f"{tmp_path / 'nowhere'}' does not exist" in said[0]
    assert not (tmp_path / "out" / "results.csv").exists()


def _wait_for(what: str, ready, study, timeout: float = 600) -> None:
    """Poll ``ready()`` until it is true; fail if the study ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert study.poll() is None, f"the study ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(1.0)


def test_a_supernode_killed_mid_run_is_dropped_and_rejoins(tmp_path):
    """Site 1's SuperNode is SIGKILLed once round 1 is done and started again once a round
    has gone on without it: it sits that round out, takes part again from its state on its
    own disk, and the study finishes with every site's rows."""
    out = tmp_path / "out"
    cfg = load_config(None, STUDY + ["pretrain.rounds=4", f"experiment.output_dir={out}"])
    deployment, port = _deployment(cfg, tmp_path)
    with federation(deployment, cfg.data.clients, port) as parties:
        study = start_study(deployment)
        _wait_for("round 1", lambda: any(r["round"] == 1 for r in _rounds(out)), study)
        parties.kill_supernode(1)
        _wait_for("a round without site 1",
                  lambda: any("1" in r["dropped"] for r in _rounds(out)), study)
        parties.start_supernode(1)
        run = finish_study(study, deployment, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    pretrain = [r for r in _rounds(out) if r["phase"] == "pretrain"]
    assert [r["round"] for r in pretrain] == [1, 2, 3, 4]
    missed = [r["round"] for r in pretrain if 1 not in r["participants"]]
    back = [r["round"] for r in pretrain if 1 in r["participants"] and r["round"] > missed[0]]
    assert missed[0] >= 2 and back, pretrain   # sat out, then took part again
    # Left out as failed, not as late: the SuperLink answers for a node that missed its
    # heartbeats, and its error counts as that site's.
    assert all(r["participants"] == [0] and "Node Unavailable" in r["dropped"]["1"]
               for r in pretrain if r["round"] in missed)
    rows = pd.read_csv(out / "results.csv")
    assert rows["client"].tolist() == [0, 1] and rows["dice_mean"].between(0, 1).all()


def test_a_stopped_study_resumes_to_rays_weights_and_rows(ray_session, tmp_path):
    """The study is stopped (``flwr stop``) once round 1 is done and continued with
    ``run.sh --resume``: pre-training goes on after round 1 (each site from its own state of
    it) and ends with the global weights and Dice of an uninterrupted run, which the first
    test shows are Ray's, bit for bit. Then ``run.sh --resume --set`` grows the grid (local
    mode too) as ``fcl-ray run --resume --set`` does on Ray."""
    out = tmp_path / "out"
    cfg = load_config(None, STUDY + [f"experiment.output_dir={out}"])
    deployment, port = _deployment(cfg, tmp_path)
    with federation(deployment, cfg.data.clients, port):
        study = start_study(deployment)
        _wait_for("round 1", lambda: any(r["round"] == 1 for r in _rounds(out)), study)
        stop_study(deployment)
        stopped = finish_study(study, deployment, timeout=120)
        assert stopped.returncode == 1 and not (out / "results.csv").exists(), stopped.stdout[-3000:]
        assert CheckpointStore(str(out / "checkpoints")).latest("fcl-fold0") == 1
        run = run_study(deployment, 480, "--resume")
        finished = pd.read_csv(out / "results.csv")
        # Run again without --resume: refused as `fcl-ray run` refuses, before any site is asked.
        again = run_study(deployment, 240)
        # --set on a resume: a key that changes results is refused, a grown grid runs.
        changed = run_study(deployment, 240, "--resume", "--set", "pretrain.rounds=3")
        grown = run_study(deployment, 480, "--resume", "--set", "finetune.modes=[federated,local]")
    for refused, why in ((again, "already holds results (results.csv); continue them with "
                                 "--resume"), (changed, "pretrain.rounds 2 -> 3")):
        assert refused.returncode == 2, refused.stdout[-3000:]
        said = [line for line in refused.stdout.splitlines() if line.startswith("fcl-ray: error:")]
        assert len(said) == 1 and why in said[0], said
    assert run.returncode == 0, run.stdout[-3000:]
    assert "fcl-ray: [fcl] fold 0: resumed after round 1" in run.stdout
    assert grown.returncode == 0, grown.stdout[-3000:]
    # The grown grid: the federated rows kept as they were, the local ones new, no round of
    # pre-training run again; and all of it Ray's run of the whole grid, bit for bit.
    rows = pd.read_csv(out / "results.csv")
    assert rows["finetune_mode"].tolist() == ["federated", "federated", "local", "local"]
    pd.testing.assert_frame_equal(rows[rows["finetune_mode"] == "federated"][finished.columns],
                                  finished, check_dtype=False)
    assert [r["round"] for r in _rounds(out) if r["phase"] == "pretrain"] == [1, 2]
    # machine.json: the first start, the resume and the grown grid's resume (the two runs
    # refused before any site was asked record nothing), all on this machine: no warning.
    starts = json.loads((out / MACHINE_FILE).read_text())
    assert [s["resumed"] for s in starts] == [False, True, True]
    assert "another machine setup" not in run.stdout + grown.stdout
    _assert_rays(out, tmp_path / "ray", ["finetune.modes=[federated,local]"])
