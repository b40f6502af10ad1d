"""Round checkpoints on a local path or any URI fsspec can write (s3://, gs://, ...).

Layout under the root, per pre-training phase (method and fold):

    <phase>/round-0003/coordinator.npz    global weights, shared features, round, the
                                          participant sampler's state (NumPy)
    <phase>/round-0003/client-0.pt        each client's own state (optimiser, bank, RNG, nets)
    <phase>/LATEST                        {"round": 3}: written last, so a round is complete
                                          only once every file of it is there

Every file is written to a temporary name and then renamed, so a crash mid-write never
leaves a half file where a reader looks.

Client files hold tensors and plain values (dicts, lists, tuples, str, numbers, None) only
and are read with ``torch.load(..., weights_only=True)``; the coordinator's file holds NumPy
arrays (``np.savez``) and is read with ``allow_pickle=False``, so the coordinator never
imports torch. Either way, whoever can write to the store (a shared bucket) cannot make a
resuming node run code: a file that needs more is refused with one line
(:class:`CheckpointError`), and :meth:`CheckpointStore.save` refuses to write one.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from typing import Any, Optional

import fsspec
import numpy as np

from fcl_ray.config import ConfigError

PLAIN = (str, int, float, bool, type(None))


def phase_name(method: str, fold: int) -> str:
    """The folder of one pre-training phase's round checkpoints (coordinator and sweep trials)."""
    return f"{method}-fold{fold}"


COORDINATOR_FILE = "coordinator.npz"


def client_file(client_id: int) -> str:
    """The name of one client's own state in a round folder."""
    return f"client-{client_id}.pt"


def coordinator_arrays(round_index: int, global_weights: Optional[np.ndarray],
                       shared: dict[int, tuple[np.ndarray, np.ndarray]],
                       participant_rng: Optional[str] = None) -> dict[str, np.ndarray]:
    """The coordinator's round state (round, global weights, the feature pool by client, and
    the participant generator's state as a JSON string) as named arrays (what
    :func:`coordinator_state` and :func:`participant_rng_state` read)."""
    arrays = {"round": np.array(round_index)}
    if participant_rng is not None:   # a 0-d unicode array: no pickle needed to read it
        arrays["participant_rng"] = np.array(participant_rng)
    if global_weights is not None:
        arrays["global_weights"] = global_weights
    for cid, (features, partitions) in shared.items():
        arrays[f"features_{cid}"], arrays[f"partitions_{cid}"] = features, partitions
    return arrays


def coordinator_state(arrays: dict[str, np.ndarray],
                      path: str = "coordinator") -> tuple[int, Optional[np.ndarray], dict]:
    """(round, global weights, shared features) from :func:`coordinator_arrays`' output;
    a file that lacks one of them is one line (:class:`CheckpointError`) naming ``path``."""
    try:
        shared = {}
        for name in arrays:
            if name.startswith("features_"):
                cid = name.removeprefix("features_")
                shared[int(cid)] = (arrays[name], arrays[f"partitions_{cid}"])
        return int(arrays["round"]), arrays.get("global_weights"), shared
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}': not a coordinator state "
                              f"({type(err).__name__}: {err})") from None


def participant_rng_state(arrays: dict[str, np.ndarray], path: str = "coordinator") -> Optional[str]:
    """The participant generator's saved state (JSON), or None in a file without one."""
    saved = arrays.get("participant_rng")
    if saved is None:
        return None
    if saved.dtype.kind != "U" or saved.ndim != 0:
        raise CheckpointError(f"checkpoint '{path}': participant_rng is not a JSON string")
    return str(saved)


def restore_coordinator(store: "CheckpointStore", phase: str, participant_rng
                        ) -> Optional[tuple[int, Optional[np.ndarray], dict, str]]:
    """The coordinator's state of ``phase``'s last complete round checkpoint in ``store``:
    (round, global weights, feature pool, the round's folder), with ``participant_rng`` set
    to the saved participant generator; None when the phase has no checkpoint. A file that
    cannot be read is one :class:`CheckpointError` naming it."""
    from fcl_ray.core.participation import restore_generator

    last = store.latest(phase)
    if last is None:
        return None
    path = store.round_dir(phase, last)
    file = f"{path}/{COORDINATOR_FILE}"
    arrays = store.load_arrays(file)
    round_index, global_weights, shared = coordinator_state(arrays, file)
    saved_rng = participant_rng_state(arrays, file)
    if saved_rng is not None:   # None: written before sampling existed; fresh stream
        try:
            restore_generator(participant_rng, saved_rng)
        except (ValueError, TypeError, KeyError) as err:
            raise CheckpointError(f"checkpoint '{file}': participant_rng is not a "
                                  f"generator state ({type(err).__name__})") from None
    return round_index, global_weights, shared, path


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read safely (or at all): bad input, exit 2."""


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that is not a tensor or a plain value."""
    import torch   # here, not at the top: the coordinator uses this module without torch

    if torch.is_tensor(obj) or isinstance(obj, PLAIN):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, PLAIN):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}")
            check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} is a {type(obj).__name__}: checkpoints hold tensors and "
                        f"plain values only (store numpy arrays as tensors)")


class CheckpointStore:
    def __init__(self, root: str, keep: int = 2):
        self.url = root                      # as given: what another process opens it by
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.keep = keep
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def round_dir(self, phase: str, round_index: int) -> str:
        return self._path(phase, f"round-{round_index:04d}")

    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic write: temporary file, then rename."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as handle:
            handle.write(data)
        self.fs.mv(tmp, path)

    def save(self, path: str, obj: Any) -> None:
        """Write ``obj`` (tensors and plain values only, see :func:`check_plain`)."""
        import torch

        check_plain(obj, path)
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        self.write_bytes(path, buffer.getvalue())

    def load(self, path: str) -> Any:
        """Read a file written by :meth:`save`; never runs code stored in it."""
        import torch

        data = self._read(path)
        try:
            return torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:   # noqa: BLE001  (a refused global, a truncated file, ...)
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            if isinstance(err, pickle.UnpicklingError) and "Weights only" in str(err):
                # torch's restricted unpickler met something else than tensors and plain
                # values (a global such as os.system, or garbage): say what, not torch's advice
                why = next((line.rstrip(".") for line in lines[1:]
                            if not line.startswith(("Please file", "Check the documentation"))),
                           "")
                raise CheckpointError(
                    f"checkpoint '{path}': refused, not only tensors and plain values (loading "
                    f"it could run code){': ' + why if why else ''}") from None
            first = (lines or [type(err).__name__])[0][:200]
            raise CheckpointError(f"checkpoint '{path}': cannot be read: {first}") from None

    def carry_forward(self, source: str, target: str) -> bool:
        """Copy a file of an earlier round into a new round's folder (a client that could not
        save this round keeps its last state in the newest checkpoint, which older rounds'
        folders do not outlive); False if ``source`` is not there."""
        if not self.fs.exists(source):
            return False
        self.write_bytes(target, self._read(source))
        return True

    def save_arrays(self, path: str, arrays: dict[str, np.ndarray]) -> None:
        """Write named NumPy arrays (``np.savez``: no pickle, no torch)."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.write_bytes(path, buffer.getvalue())

    def load_arrays(self, path: str) -> dict[str, np.ndarray]:
        """Read a file written by :meth:`save_arrays`; object arrays (pickles) are refused."""
        try:
            with np.load(io.BytesIO(self._read(path)), allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        except ValueError as err:
            if "allow_pickle" in str(err):
                # an object array, or bytes that are no .npz at all (NumPy would unpickle them)
                raise CheckpointError(f"checkpoint '{path}': refused, not only arrays (a pickle; "
                                      f"loading it could run code)") from None
            raise CheckpointError(f"checkpoint '{path}': cannot be read: {err}") from None
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise CheckpointError(f"checkpoint '{path}': cannot be read: "
                                  f"{str(err).splitlines()[0][:200] or type(err).__name__}") from None

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open(path, "rb") as handle:
                return handle.read()
        except (OSError, ValueError) as err:   # missing (a LATEST ahead of its files), a folder
            raise CheckpointError(f"checkpoint '{path}': cannot be read "
                                  f"({type(err).__name__}: {str(err)[:120]})") from None

    def mark_complete(self, phase: str, round_index: int) -> None:
        """Publish a round (after all its files are written) and drop older rounds."""
        self.write_bytes(self._path(phase, "LATEST"), json.dumps({"round": round_index}).encode())
        for old in range(round_index - self.keep, 0, -1):
            path = self.round_dir(phase, old)
            if not self.fs.exists(path):
                break
            self.fs.rm(path, recursive=True)

    def latest(self, phase: str) -> Optional[int]:
        """The last complete round of a phase, or None; a pointer that is not what
        :meth:`mark_complete` writes is one :class:`CheckpointError` naming it."""
        path = self._path(phase, "LATEST")
        if not self.fs.exists(path):
            return None
        return read_pointer(self._read(path), path)


def checkpoint_root(cfg) -> str:
    """Where a run's round checkpoints live: ``federation.checkpoint_dir`` or
    ``<output_dir>/checkpoints``."""
    return cfg.federation.checkpoint_dir or f"{cfg.experiment.output_dir}/checkpoints"


def check_resumable(root: str) -> None:
    """Before a resume starts Ray: every phase's ``LATEST`` pointer under ``root`` is a round
    whose coordinator file is there. A bad one is one CheckpointError naming the file, here,
    instead of inside the coordinator actor."""
    fs, base = fsspec.core.url_to_fs(root)
    try:
        pointers = fs.glob(f"{base.rstrip('/')}/*/LATEST") if fs.isdir(base) else []
    except OSError as err:
        raise CheckpointError(f"checkpoints '{root}': cannot be listed ({err})") from None
    for pointer in sorted(pointers):
        phase = pointer.rsplit("/", 2)[-2]
        try:
            with fs.open(pointer, "rb") as handle:
                round_index = read_pointer(handle.read(), pointer)
        except OSError as err:
            raise CheckpointError(f"checkpoint pointer '{pointer}': cannot be read "
                                  f"({type(err).__name__})") from None
        state = f"{base.rstrip('/')}/{phase}/round-{round_index:04d}/{COORDINATOR_FILE}"
        if round_index and not fs.isfile(state):
            raise CheckpointError(f"checkpoint pointer '{pointer}' names round {round_index}, "
                                  f"but '{state}' is missing; delete the phase's folder to "
                                  f"start it afresh")


POINTER_MAX = 10**6   # rounds; a pointer beyond it is garbage (pretrain.rounds stops at 1e5)


def read_pointer(data: bytes, path: str) -> int:
    """The round of a ``LATEST`` pointer's bytes (``{"round": 3}``, a whole number >= 0);
    anything else (garbage, another JSON, a negative or fractional round) is one
    CheckpointError naming ``path``."""
    try:
        value = json.loads(data.decode("utf-8"))["round"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
        value = None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= POINTER_MAX:
        raise CheckpointError(f"checkpoint pointer '{path}': expected {{\"round\": <a whole "
                              f"number >= 0>}}, got {data[:40]!r}; delete the phase's folder "
                              f"to start it afresh")
    return value
