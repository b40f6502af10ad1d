"""The results set: per-client rows of ``results.csv``, read and checked.

Inputs are ``results.csv`` files written by ``fcl-ray run`` (one row per method,
finetune_mode, n_labeled, fold, client) or the MLflow runs of an experiment (each run logs
its ``results.csv`` as an artifact).

When several sources hold the same (method, finetune_mode, n_labeled, fold, client, seed) row,
the one read last wins (MLflow runs are read oldest first, so a re-run replaces the old
numbers). Rows without a ``seed`` column count as seed 0.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from fcl_ray.config import FINETUNE_MODES, ConfigError
from fcl_ray.data.labels import CARDIAC_CLASSES, MEAN_COLUMN, dice_columns

KEY_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", "client"]


def result_columns(classes=CARDIAC_CLASSES) -> list[str]:
    """The leading columns of a results.csv: the keys, dice_mean, then dice_<class> in
    label order (``fcl_ray/data/labels.py``); other columns (steps, seconds...) follow."""
    return KEY_COLUMNS + [MEAN_COLUMN, *dice_columns(classes)]


RESULT_COLUMNS = result_columns()   # the cardiac default (rv, myo, lv)
# probes.csv beside results.csv (probes.enabled): one value per encoder, fold, client, probe.
PROBE_COLUMNS = ["method", "fold", "client", "probe", "value"]
# Written by the driver (experiment.seed); results concatenated from several seeds are told
# apart by it. Absent -> every row is seed 0.
SEED_COLUMN = "seed"
# Rows of the fully supervised reference (random init, every training case labeled): its N is
# the whole training set, so it gets a column of its own ("all labels") instead of an N column.
UPPER_BOUND = "upper_bound"
# Row order of the paper's tables; methods not listed follow in order of appearance.
METHOD_ORDER = ["random", "local_cl", "fedrotation", "fedsimclr", "fedswav", "fedca", "fcl",
                "fcl_no_exchange", "fcl_no_matching", "fcl_literal_negatives", "supervised_encoder",
                UPPER_BOUND]


def _method_order(methods: Iterable[str]) -> list[str]:
    seen = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in seen] + [m for m in seen if m not in METHOD_ORDER]


# ----------------------------------------------------------------------------- reading
def is_dice_column(column: str) -> bool:
    """dice_mean, dice_<class> (dice_rv, ...) and the validation Dice of
    ``finetune.budget=converge``."""
    return column.startswith("dice_") or column == "val_dice"


def check_dice(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """``frame`` with its Dice columns as numbers; ConfigError naming the column and row
    (1 = the first row under the header) of a value that is not a number in [0, 1]. Empty
    cells (NaN) pass: a structure absent from both mask and prediction has no Dice."""
    frame = frame.copy()
    for column in [c for c in frame.columns if is_dice_column(str(c))]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (values.isna() & frame[column].notna()) | ~(values.isna() | values.between(0, 1))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            value = frame[column].iloc[row]
            shown = repr(value[:40]) if isinstance(value, str) else str(value)
            raise ConfigError(f"results {where}: column {column}, row {row + 1}: {shown} is "
                              f"not a Dice (a number in [0, 1])")
        frame[column] = values
    return frame


def check_results(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """Raise ConfigError (one line naming ``where``) unless ``frame`` is a usable results set."""
    if frame.empty:
        raise ConfigError(f"results {where}: no rows")
    missing = [c for c in KEY_COLUMNS + ["dice_mean"] if c not in frame.columns]
    if missing:
        raise ConfigError(f"results {where}: missing columns {', '.join(missing)}")
    for column in ("method", "finetune_mode"):
        empty = frame[column].isna() | frame[column].astype(str).str.strip().eq("")
        if empty.any():
            raise ConfigError(f"results {where}: column {column}, row "
                              f"{int(empty.to_numpy().argmax()) + 1}: empty")
    modes = sorted(set(frame["finetune_mode"].astype(str)) - set(FINETUNE_MODES))
    if modes:
        raise ConfigError(f"results {where}: unknown finetune_mode {', '.join(modes)} "
                          f"(expected {', '.join(FINETUNE_MODES)})")
    frame = frame.copy()
    for column in ["n_labeled", "fold", "client"] + [SEED_COLUMN] * (SEED_COLUMN in frame.columns):
        frame[column] = _whole_numbers(frame[column], column, f"results {where}")
    frame["method"] = frame["method"].astype(str)
    return check_dice(frame, where)


def _whole_numbers(column: pd.Series, name: str, where: str) -> pd.Series:
    """``column`` as integers; ConfigError naming the column and row (1 = the first under
    the header) of a value that is not a whole number >= 0 (text, 1.5, -1, inf, empty)."""
    values = pd.to_numeric(column, errors="coerce")
    finite = values.notna() & values.abs().lt(2**53)   # NaN (text, empty) and inf fail here
    bad = ~finite | ((values != values.round()) | (values < 0)).fillna(True)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ConfigError(f"{where}: column {name}, row {row + 1}: "
                          f"{str(column.iloc[row])[:40]!r} is not a whole number >= 0")
    return values.astype(int)


def with_seed(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with a whole-number seed column (0 where a source had none)."""
    results = results.copy()
    if SEED_COLUMN not in results.columns:
        results[SEED_COLUMN] = 0
    results[SEED_COLUMN] = results[SEED_COLUMN].fillna(0).astype(int)
    return results


def read_results_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise ConfigError(f"results file '{path}': not found")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"results file '{path}': is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError(f"results file '{path}': not a CSV ({str(err).splitlines()[0]})") from None
    return check_results(frame, f"file '{path}'")


def read_mlflow_results(experiment: str, tracking_uri: Optional[str] = None) -> list[tuple[str, pd.DataFrame]]:
    """The ``results.csv`` artifact of every run of an MLflow experiment (name or id), oldest
    run first, as (label, frame) pairs."""
    import os

    import mlflow
    from mlflow.tracking import MlflowClient

    from fcl_ray.tracking import DEFAULT_URI

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"'{experiment}' is neither a results file nor an MLflow experiment "
                          f"(no MLflow store at {uri})")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        try:
            exp = client.get_experiment(experiment)
        except mlflow.exceptions.MlflowException:
            exp = None
    if exp is None:
        raise ConfigError(f"'{experiment}' is neither a results file nor an MLflow experiment "
                          f"at {uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"],
                              max_results=10000)
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            if "results.csv" not in {a.path for a in client.list_artifacts(run.info.run_id)}:
                continue
            local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                        artifact_path="results.csv",
                                                        dst_path=f"{tmp}/{run.info.run_id}",
                                                        tracking_uri=uri)
            label = f"run {run.info.run_id} of MLflow experiment '{experiment}'"
            frames.append((label, check_results(pd.read_csv(local), label)))
    if not frames:
        raise ConfigError(f"MLflow experiment '{experiment}' at {uri}: no run has a "
                          f"results.csv artifact ({len(runs)} runs)")
    return frames


def load_results(sources: Sequence[str], tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """One results set from results.csv files, run folders and/or MLflow experiment names.

    Sources must agree on their Dice columns (e.g. not ACDC's rv/myo/lv mixed with a
    single-structure dataset). Duplicate rows: the last source read wins; how many were
    dropped is in ``frame.attrs['duplicates_dropped']``.
    """
    if not sources:
        raise ConfigError("report: no results given")
    pieces: list[tuple[str, pd.DataFrame]] = []
    for source in sources:
        path = Path(source)
        if path.exists() or source.endswith(".csv"):
            pieces.append((f"file '{source}'", read_results_csv(path)))
        else:
            pieces.extend(read_mlflow_results(source, tracking_uri))
    first_label, first = pieces[0]
    dice_first = sorted(c for c in first.columns if c.startswith("dice_"))
    for label, frame in pieces[1:]:
        dice = sorted(c for c in frame.columns if c.startswith("dice_"))
        if dice != dice_first:
            raise ConfigError(f"results do not match: {first_label} has {', '.join(dice_first)} "
                              f"but {label} has {', '.join(dice)}")
    results = pd.concat([f for _, f in pieces], ignore_index=True)
    if SEED_COLUMN in results.columns:     # a source without seeds is seed 0 (not NaN)
        results = with_seed(results)
    before = len(results)
    keys = KEY_COLUMNS + ([SEED_COLUMN] if SEED_COLUMN in results.columns else [])
    results = results.drop_duplicates(keys, keep="last").reset_index(drop=True)
    results.attrs["duplicates_dropped"] = before - len(results)
    return results



# ----------------------------------------------------------------------------- probes
def read_probes_csv(path: str | Path) -> pd.DataFrame:
    """A probes.csv written by ``fcl-ray run`` with ``probes.enabled`` (columns
    PROBE_COLUMNS); ConfigError naming the file when it is not one."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        raise ConfigError(f"probes file '{path}': not a probes CSV") from None
    missing = [c for c in PROBE_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"probes file '{path}': missing columns {', '.join(missing)}")
    where = f"probes file '{path}'"
    frame = frame.astype({"method": str, "probe": str})
    for column in ("fold", "client"):
        frame[column] = _whole_numbers(frame[column], column, where)
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() & frame["value"].notna() | values.abs().eq(float("inf"))
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ConfigError(f"{where}: column value, row {row + 1}: "
                          f"{str(frame['value'].iloc[row])[:40]!r} is not a finite number")
    return frame.assign(value=values)


def probes_beside(sources: Sequence[str]) -> Optional[pd.DataFrame]:
    """The probes.csv files next to the results files or run folders among ``sources``
    (MLflow experiment names have none), as one frame (a row read later replaces the same
    method, fold, client and probe read earlier); None when there is none."""
    frames = []
    for source in sources:
        path = Path(source)
        folder = path if path.is_dir() else path.parent
        if path.exists() and (folder / "probes.csv").is_file():
            frames.append(read_probes_csv(folder / "probes.csv"))
    if not frames:
        return None
    probes = pd.concat(frames, ignore_index=True)
    return probes.drop_duplicates(PROBE_COLUMNS[:4], keep="last").reset_index(drop=True)
