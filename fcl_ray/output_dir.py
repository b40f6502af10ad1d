"""What an output folder already holds, checked before a run starts (before Ray or MLflow).

Results are never silently mixed or replaced:

- ``fcl-ray run --resume`` continues a folder only with the config its earlier rows and
  checkpoints were made with (the ``config.yaml`` saved there). Keys that cannot change any
  results row may differ (:data:`RESUME_MAY_CHANGE`), and the grid's lists may grow at their
  end (:data:`RESUME_MAY_EXTEND`: more methods, label budgets, folds or modes; the finished
  settings are kept, the new ones run). Any other difference is one
  :class:`~fcl_ray.config.ConfigError` naming the keys, old -> new, and nothing is touched.
- A plain run into a folder whose ``results.csv`` has rows refuses; ``--overwrite`` moves the
  earlier run's files into ``<output_dir>/previous-<timestamp>/`` (never deletes them).

Only the command line goes through here: a Tune trial resumes its own folder with the config
the sweep rebuilt for it, and the chaos drill resumes with the same command.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.config_io import from_dict, read_yaml_mapping, to_dict
from fcl_ray.machine import MACHINE_FILE

# Keys a resume may change: they say what the run is called, where its processes, files and
# tracking live, and how often its state is saved, never what is computed.
# - experiment.name: the MLflow experiment and run names and the placement group's name.
# - experiment.output_dir: the folder's own path (a moved folder resumes).
# - tracking.*: the MLflow store, experiment and model names; nothing is read back from them.
# - federation.address: the Ray cluster to join (it changes when a head node is restarted).
# - federation.placement_timeout_s: how long to wait for the reservation; a run either gets
#   its whole placement group or stops before any work.
# - federation.checkpoint_every / checkpoint_dir: how often and where round state is saved;
#   every client's state (RNG included) is saved and a phase starts from the seed, so a
#   resume from any saved round, or from round 0, is bitwise equal to an uninterrupted run
#   (tests/integration/test_faults.py).
# - data.cache / data.cache_dir: whether and where preprocessed volumes are kept; an entry is
#   keyed by the files' contents and the preprocessing settings and stored losslessly.
# Not in the list, on purpose: finetune.concurrency (concurrent fine-tunes in one actor share
# its torch threads; their U-Nets' init is seeded under a lock, but this is not yet proven
# bitwise equal to sequential fine-tunes end to end), the number of
# CPUs/GPUs per client and where clients are pinned (threads, device, a site's own data),
# and the fault-handling keys (round_timeout_s, min_clients, round_retries, max_restarts,
# faults.*), which decide whose updates count in a round.
RESUME_MAY_CHANGE = (
    "experiment.name", "experiment.output_dir", "tracking.*", "federation.address",
    "federation.placement_timeout_s", "federation.checkpoint_every",
    "federation.checkpoint_dir", "data.cache", "data.cache_dir",
)
# Lists of the grid a resume may extend at their end: every setting (fold, method, mode, N)
# draws its own seeds (fcl_ray/federation/site.py, `_generator`), pre-training is seeded per
# (method, fold), and a resume runs only the settings without rows, so settings added at the
# end leave the finished rows as they are. Not reordered or shortened: the first N is the one
# `pretrain.probe_every` probes, and rows of a removed entry would lie about the config.
RESUME_MAY_EXTEND = ("pretrain.methods", "finetune.n_labeled", "finetune.folds",
                     "finetune.modes")
SAVED_CONFIG = "config.yaml"
# What a run leaves in its folder; --overwrite moves these aside.
RUN_FILES = ("results.csv", "probes.csv", SAVED_CONFIG, "rounds.jsonl", "mlflow_run.json",
             "privacy.json", MACHINE_FILE, "encoders", "checkpoints", "report")
SHOWN = 3   # differing keys named in the message; the rest are counted


def may_change_on_resume(key: str) -> bool:
    """True for a ``section.key`` that :data:`RESUME_MAY_CHANGE` lets a resume change."""
    return any(key == allowed or (allowed.endswith(".*") and key.startswith(allowed[:-1]))
               for allowed in RESUME_MAY_CHANGE)


def _leaves(cfg: Config) -> dict[str, Any]:
    """``{'pretrain.lr': 0.001, ...}``: every key of the two-level config."""
    return {f"{section}.{key}": value for section, keys in to_dict(cfg).items()
            for key, value in keys.items()}


def _text(value: Any) -> str:
    """A value as the message shows it and the comparison sees it (1 and 1.0 differ:
    federation.clients_per_round reads them as a count and a fraction)."""
    return json.dumps(value, sort_keys=True, default=str)


def extends(key: str, old: Any, new: Any) -> bool:
    """True when ``key`` is a grid list (:data:`RESUME_MAY_EXTEND`) and ``new`` is ``old``
    with entries added at its end."""
    return (key in RESUME_MAY_EXTEND and isinstance(old, list) and isinstance(new, list)
            and len(new) > len(old) and _text(new[:len(old)]) == _text(old))


def config_differences(saved: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every key that differs and may not change on a
    resume (nor grows at the end of a grid list), in the schema's order."""
    old, now = _leaves(saved), _leaves(new)
    return [(key, old[key], now[key]) for key in now
            if _text(old[key]) != _text(now[key]) and not may_change_on_resume(key)
            and not extends(key, old[key], now[key])]


def _short(value: Any, limit: int = 60) -> str:
    text = _text(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_saved_config(path: Path) -> Config:
    """The config an earlier run saved, type-checked against this version's schema (the
    cross-key checks are not asked of it); any problem is one ConfigError naming the file."""
    try:
        return from_dict(read_yaml_mapping(path, "saved config", "sections"), cross_checks=False)
    except (ConfigError, UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"--resume: cannot compare with the config saved in '{path}' "
                          f"({str(err) if isinstance(err, ConfigError) else type(err).__name__}); "
                          f"resume with the version that wrote it, or start afresh with "
                          f"--overwrite (the old files are moved aside)") from None


def check_resume(cfg: Config) -> None:
    """``--resume``: refuse a config that differs from the folder's ``config.yaml`` in a key
    that can change results. A folder without one resumes as before."""
    path = Path(cfg.experiment.output_dir) / SAVED_CONFIG
    if not path.is_file():
        return
    differences = config_differences(read_saved_config(path), cfg)
    if not differences:
        return
    shown = ", ".join(f"{key} {_short(old)} -> {_short(new)}"
                      for key, old, new in differences[:SHOWN])
    more = f" and {len(differences) - SHOWN} more" if len(differences) > SHOWN else ""
    raise ConfigError(f"--resume: {path} was made with another config ({shown}{more}); rows "
                      f"of two configs would mix. Resume with the saved values (the lists "
                      f"{', '.join(RESUME_MAY_EXTEND)} may only grow at their end), choose "
                      f"another experiment.output_dir, or start afresh with --overwrite (the "
                      f"old files are moved aside)")


def has_results(out_dir: Path) -> bool:
    """True when ``<out_dir>`` holds finished rows: results.csv, or probes.csv (a run with
    ``probes.only`` writes no results.csv)."""
    return bool(finished_files(out_dir))


def finished_files(out_dir: Path) -> list[str]:
    """The names of ``<out_dir>/results.csv`` and ``probes.csv`` that hold at least one row
    under their header (an unreadable one counts: it is never overwritten silently)."""
    found = []
    for name in ("results.csv", "probes.csv"):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            with path.open("rb") as handle:
                if sum(1 for line in handle if line.strip()) > 1:
                    found.append(name)
        except OSError:
            found.append(name)
    return found


def move_aside(out_dir: Path, now: Optional[float] = None) -> Optional[Path]:
    """Move the earlier run's files (:data:`RUN_FILES`) into a new
    ``<out_dir>/previous-<timestamp>/``; return it, or None when there was nothing."""
    present = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    target = out_dir / f"previous-{stamp}"
    suffix = 1
    while target.exists():   # two overwrites within a second
        suffix += 1
        target = out_dir / f"previous-{stamp}-{suffix}"
    target.mkdir()
    for path in present:
        path.rename(target / path.name)
    return target


def prepare_output_dir(cfg: Config, resume: bool, overwrite: bool,
                       log: Callable[[str], None]) -> None:
    """The output folder checks of ``fcl-ray run`` (and of a Flower study's ``run.sh``),
    before anything starts: ``--resume`` needs the saved config and readable checkpoint
    pointers; a folder with results needs ``--resume`` or ``--overwrite``; ``--overwrite``
    moves the earlier files aside."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: give one")
    out_dir = Path(cfg.experiment.output_dir)
    if resume:
        check_resume(cfg)
        # A garbage LATEST pointer: one line now, not an error inside the coordinator.
        from fcl_ray.federation.checkpoint import check_resumable, checkpoint_root

        check_resumable(checkpoint_root(cfg))
        return
    if overwrite:
        moved = move_aside(out_dir)
        if moved is not None:
            log(f"--overwrite: the earlier run's files moved to {moved}")
        return
    finished = finished_files(out_dir)
    if finished:
        raise ConfigError(f"experiment.output_dir '{out_dir}' already holds results "
                          f"({', '.join(finished)}); continue them with --resume, start afresh with "
                          f"--overwrite (the old files are moved aside), or choose another "
                          f"experiment.output_dir")
