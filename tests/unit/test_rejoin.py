"""A client rebuilt after a restart restores its own last round checkpoint (no Ray: the
site's ``rejoin`` call as the coordinator sends it, and the store's carry-forward)."""
import pytest
import torch

from conftest import TINY
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.checkpoint import CheckpointStore, client_file
from fcl_ray.federation.site import ClientSite

SETUP = ("start_pretraining", ("fcl", 0))
PHASE = "fcl-fold0"


def _site() -> ClientSite:
    return ClientSite(to_dict(load_config(None, TINY)), client_id=1, num_threads=1)


def _trained_and_saved(store: CheckpointStore) -> ClientSite:
    """A client that ran two rounds and saved its state into round 2's checkpoint."""
    site = _site()
    site.start_pretraining(*SETUP[1])
    for r in (1, 2):
        site.pretrain_round(None, None, r)
    site.save_state(store.url, store.round_dir(PHASE, 2))
    store.mark_complete(PHASE, 2)
    return site


def _adam_steps(method) -> list[float]:
    return [float(s["step"]) for s in method.optimizer.state_dict()["state"].values()]


def test_a_rebuilt_client_continues_from_its_own_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    before = _trained_and_saved(store)
    rebuilt = _site()   # the new process Ray started
    assert rebuilt.rejoin(*SETUP, store.url, PHASE) == {"restored": True, "round": 2, "why": ""}
    old, new = before.method, rebuilt.method
    assert _adam_steps(new) == _adam_steps(old) and _adam_steps(new)[0] == 4   # 2 rounds x 2
    for name in ("net", "momentum_net"):
        a, b = getattr(old, name).state_dict(), getattr(new, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(old.bank.state_dict()["features"], new.bank.state_dict()["features"])
    assert torch.equal(old.gen.get_state(), new.gen.get_state())
    # and it trains on from there: the same next round as the client that never died
    a = before.pretrain_round(None, None, 3)
    b = rebuilt.pretrain_round(None, None, 3)
    assert (a.weights == b.weights).all()


def test_without_a_checkpoint_or_with_a_bad_one_it_starts_afresh(tmp_path):
    site = _site()
    assert site.rejoin(*SETUP) == {"restored": False, "round": None,
                                   "why": "no checkpoint to restore"}
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    assert site.rejoin(*SETUP, store.url, PHASE)["why"] == "no checkpoint yet"
    store.write_bytes(f"{store.round_dir(PHASE, 1)}/{client_file(0)}", b"someone else's")
    store.mark_complete(PHASE, 1)
    assert site.rejoin(*SETUP, store.url, PHASE)["why"] == ("the round-1 checkpoint holds no "
                                                            "state of it")
    store.write_bytes(f"{store.round_dir(PHASE, 1)}/{client_file(1)}", b"not a checkpoint")
    answer = site.rejoin(*SETUP, store.url, PHASE)
    assert not answer["restored"] and answer["why"].startswith("checkpoint '")
    assert _adam_steps(site.method) == []   # set up afresh, not half restored


def test_rejoin_runs_only_a_phase_set_up_call():
    with pytest.raises(ValueError, match="not a phase's set-up call"):
        _site().rejoin("finish_pretraining", (None,))


def test_carry_forward_copies_a_client_file_into_the_new_round(tmp_path):
    store = CheckpointStore(str(tmp_path))
    old, new = (f"{store.round_dir('p', r)}/{client_file(0)}" for r in (1, 2))
    assert not store.carry_forward(old, new)
    store.save(old, {"step": torch.tensor(3)})
    assert store.carry_forward(old, new)
    assert store.load(new)["step"].item() == 3
