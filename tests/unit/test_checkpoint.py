"""Checkpoints: every registered method declares all the state a round changes, resuming
from the file continues bit for bit, and a file that would run code is refused unread."""
import copy

import numpy as np
import pytest
import torch

from fcl_ray.config import ConfigError
from fcl_ray.federation.checkpoint import (COORDINATOR_FILE, CheckpointError, CheckpointStore,
                                           coordinator_arrays, coordinator_state,
                                           participant_rng_state)
from fcl_ray.methods import get_method_class, registered_methods

from hostile_files import plant_array_checkpoint, plant_checkpoint
from method_fixtures import build_method, remote_features

METHODS = [m for m in registered_methods() if get_method_class(m) is not None]


def _build(name):
    return build_method(name, generator_seed=1)


def _client_round(method, remote, global_state=None) -> dict:
    """What a client does in one pre-training round (federation/site.py), minus Ray."""
    if global_state is not None:
        method.load_shared_state(global_state)
    metrics = method.train_round(2, remote)
    metrics.update(method.health())
    method.shared_features()
    method.shared_state()
    return metrics


def reachable_state(obj) -> dict[str, object]:
    """Every tensor, array, generator state and number reachable from ``obj``'s attributes
    (through modules, optimisers, dicts, lists), by path: 'bank.pointer[0]', ..."""
    found: dict[str, object] = {}
    seen: set[int] = set()

    def walk(value, path):
        if isinstance(value, torch.Generator):
            found[path] = value.get_state()
        elif torch.is_tensor(value):
            found[path] = value.detach().clone()
        elif isinstance(value, np.ndarray):
            found[path] = value.copy()
        elif isinstance(value, (bool, int, float)):
            found[path] = value
        elif id(value) in seen:
            return
        elif isinstance(value, dict):
            seen.add(id(value))
            for i, (key, item) in enumerate(value.items()):   # an optimiser's state is keyed
                walk(item, f"{path}[{key if isinstance(key, (str, int)) else i}]")  # by tensors
        elif isinstance(value, (list, tuple)):
            seen.add(id(value))
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif hasattr(value, "__dict__"):
            seen.add(id(value))
            for key, item in vars(value).items():
                walk(item, f"{path}.{key}" if path else key)

    walk(obj, "")
    return found


def _same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def _attribute(path: str) -> str:
    return path.split(".")[0].split("[")[0]


@pytest.mark.parametrize("name", METHODS)
def test_every_state_a_round_changes_is_declared_for_checkpoints(name):
    torch.set_num_threads(1)
    method = _build(name)
    _client_round(method, None)
    before = reachable_state(method)
    _client_round(method, remote_features(method), method.shared_state())
    after = reachable_state(method)
    changed = {p for p in after if p not in before or not _same(before[p], after[p])}
    declared = set(method.checkpointed) | set(method.not_checkpointed)
    undeclared = sorted(p for p in changed if _attribute(p) not in declared)
    assert changed, "a round changed nothing?"
    assert not undeclared, (f"{name}: a round changes {undeclared[:5]}, which --resume would "
                            f"lose: add the attribute to {type(method).__name__}.checkpointed")


@pytest.mark.parametrize("name", METHODS)
def test_restored_method_holds_every_state_and_continues_bit_for_bit(name, tmp_path):
    torch.set_num_threads(1)
    original = _build(name)
    _client_round(original, None)
    remote = remote_features(original)
    global_state = {k: v.clone() for k, v in original.shared_state().items()}   # not live views
    store = CheckpointStore(str(tmp_path))
    store.save(f"{tmp_path}/client-0.pt", original.checkpoint_state())   # what save_state does

    restored = _build(name)               # a fresh process would build it the same way
    restored.load_checkpoint_state(store.load(f"{tmp_path}/client-0.pt"))
    want, got = reachable_state(original), reachable_state(restored)
    differ = sorted(p for p in want if _attribute(p) not in original.not_checkpointed
                    and not (p in got and _same(want[p], got[p])))
    assert not differ, f"{name}: restored state differs at {differ[:5]}"

    expected = _client_round(original, remote, global_state)
    assert _client_round(restored, remote, global_state) == expected
    for key, value in restored.shared_state().items():
        assert torch.equal(value, original.shared_state()[key]), key
    assert torch.equal(restored.gen.get_state(), original.gen.get_state())


def test_a_checkpoint_that_misses_declared_state_is_refused():
    method = _build("fcl")
    state = method.checkpoint_state()
    del state["bank"]
    with pytest.raises(ValueError, match=r"FCL: the checkpoint has no \['bank'\]"):
        _build("fcl").load_checkpoint_state(state)


def test_a_checkpoint_carrying_a_callable_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    store = CheckpointStore(str(tmp_path / "store"))
    path = f"{store.round_dir('fcl-fold0', 1)}/client-0.pt"
    plant_checkpoint(store, path, marker)   # as an attacker with write access to the bucket

    with pytest.raises(CheckpointError) as refused:
        store.load(path)
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError)       # bad input: the CLI exits 2
    assert "\n" not in message and path in message and "refused" in message
    assert "posix.system" in message or "os.system" in message
    assert not marker.exists(), "the pickled callable ran"


def test_a_coordinator_file_carrying_a_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "code-ran"
    store = CheckpointStore(str(tmp_path / "store"))
    path = f"{store.round_dir('fcl-fold0', 1)}/{COORDINATOR_FILE}"
    plant_array_checkpoint(store, path, marker)
    with pytest.raises(CheckpointError) as refused:
        store.load_arrays(path)
    message = str(refused.value)
    assert "\n" not in message and path in message and "refused" in message
    assert not marker.exists(), "the pickled callable ran"
    store.write_bytes(path, b"not a zip")   # NumPy would try to unpickle this: refused too
    with pytest.raises(CheckpointError, match=r"refused"):
        store.load_arrays(path)
    store.save_arrays(path, {"round": np.array(1), "global_weights": np.zeros(1000)})
    whole = store._read(path)
    store.write_bytes(path, whole[:len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"cannot be read"):
        store.load_arrays(path)


def test_coordinator_state_round_trips_through_its_array_file(tmp_path):
    store = CheckpointStore(str(tmp_path))
    shared = {0: (np.ones((3, 4), np.float32), np.arange(3, dtype=np.int16)),
              12: (np.zeros((2, 4), np.float32), np.array([1, 0], np.int16))}
    weights = np.linspace(0, 1, 7, dtype=np.float32)
    store.save_arrays(f"{tmp_path}/c.npz", coordinator_arrays(5, weights, shared))
    round_index, loaded_weights, loaded_shared = coordinator_state(
        store.load_arrays(f"{tmp_path}/c.npz"))
    assert round_index == 5 and np.array_equal(loaded_weights, weights)
    assert loaded_shared.keys() == shared.keys()
    for cid, (features, partitions) in shared.items():
        assert np.array_equal(loaded_shared[cid][0], features)
        assert loaded_shared[cid][1].dtype == np.int16
        assert np.array_equal(loaded_shared[cid][1], partitions)
    store.save_arrays(f"{tmp_path}/d.npz", coordinator_arrays(1, None, {}))   # local method
    assert coordinator_state(store.load_arrays(f"{tmp_path}/d.npz")) == (1, None, {})
    with pytest.raises(CheckpointError, match=r"'x.npz': not a coordinator state"):
        coordinator_state({"features_0": np.ones(2)}, "x.npz")   # its partitions are missing


def test_the_participant_generator_state_survives_the_pickle_free_array_file(tmp_path):
    from fcl_ray.core.participation import (generator_state, participant_generator,
                                            restore_generator, sample_participants)

    store = CheckpointStore(str(tmp_path))
    rng = participant_generator(0, 0)
    sample_participants(50, 5, rng)
    store.save_arrays(f"{tmp_path}/c.npz", coordinator_arrays(1, None, {}, generator_state(rng)))
    arrays = store.load_arrays(f"{tmp_path}/c.npz")               # allow_pickle=False
    assert coordinator_state(arrays) == (1, None, {})             # not taken for features
    resumed = participant_generator(0, 0)
    restore_generator(resumed, participant_rng_state(arrays))
    assert sample_participants(50, 5, resumed) == sample_participants(50, 5, rng)
    assert participant_rng_state(store.load_arrays(f"{tmp_path}/c.npz")) is not None
    store.save_arrays(f"{tmp_path}/d.npz", coordinator_arrays(1, None, {}))
    assert participant_rng_state(store.load_arrays(f"{tmp_path}/d.npz")) is None
    with pytest.raises(CheckpointError, match=r"'x.npz': participant_rng is not a JSON string"):
        participant_rng_state({"participant_rng": np.arange(3)}, "x.npz")


def test_a_damaged_checkpoint_is_one_line(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(f"{tmp_path}/client-0.pt", {"weights": torch.zeros(100)})
    whole = (tmp_path / "client-0.pt").read_bytes()
    store.write_bytes(f"{tmp_path}/client-0.pt", whole[:len(whole) // 2])   # cut short
    with pytest.raises(CheckpointError, match=r"client-0.pt': cannot be read") as err:
        store.load(f"{tmp_path}/client-0.pt")
    assert "\n" not in str(err.value)
    store.write_bytes(f"{tmp_path}/client-1.pt", b"not a checkpoint")   # not even a zip
    with pytest.raises(CheckpointError, match=r"client-1.pt': refused") as err:
        store.load(f"{tmp_path}/client-1.pt")
    assert "\n" not in str(err.value)


def test_save_refuses_what_a_safe_load_could_not_read(tmp_path):
    store = CheckpointStore(str(tmp_path))
    with pytest.raises(TypeError, match=r"\['shared'\]\[0\]\[0\] is a ndarray"):
        store.save(f"{tmp_path}/c.pt", {"shared": {0: (np.zeros(2), np.zeros(2))}})
    state = {"round": 2, "global_weights": torch.arange(3.0), "shared": {0: (torch.ones(1),)},
             "pointer": [1, 2], "note": None}
    store.save(f"{tmp_path}/c.pt", state)
    loaded = store.load(f"{tmp_path}/c.pt")
    assert loaded.keys() == state.keys() and torch.equal(loaded["global_weights"],
                                                         state["global_weights"])


@pytest.mark.parametrize("name", ["fcl", "fedswav"])   # a bank, an in-place step counter
def test_training_after_a_restore_leaves_the_saved_state_untouched(name):
    torch.set_num_threads(1)
    saved = _build(name).checkpoint_state()
    kept = copy.deepcopy(saved)
    method = _build(name)
    method.load_checkpoint_state(saved)
    method.train_round(2, None)
    want, got = reachable_state(kept), reachable_state(saved)
    assert want.keys() == got.keys()
    assert not [p for p in want if not _same(want[p], got[p])], "training wrote into the saved state"
