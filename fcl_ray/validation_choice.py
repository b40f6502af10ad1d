"""Choosing a fine-tuning setting on validation data, setting by setting (``fcl-ray choose``).

The inputs are run folders that share their encoders (the same data, model, seed,
pre-training and control: a copy of one folder continued with ``--resume`` after a fine-tuning
key was changed in its config.yaml, or the same config run twice) and differ in one or more
fine-tuning keys, the *candidates* (e.g. ``finetune.encoder_lr_scale`` 0.1 and 1). For every
setting of the grid (method, fine-tuning mode, N, fold, seed) the candidate with the highest
mean validation Dice over the clients is kept (``val_dice``: each client's validating
patients, never its test patients); ties go to the folder named first. Every method is chosen
from the same candidates, so each has the same tuning budget, and the table says how many
candidates each setting had. Test Dice is shown beside the choice, for the record only.

Pure pandas and YAML: no Ray, no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from fcl_ray.config import ConfigError
from fcl_ray.results import (KEY_COLUMNS, PROBE_COLUMNS, SEED_COLUMN, _method_order,
                             read_probes_csv, read_results_csv, with_seed)

SETTING_COLUMNS = ["method", "finetune_mode", "n_labeled", "fold", SEED_COLUMN]
CANDIDATE_COLUMN = "candidate"
VALIDATION = "val_dice"   # the early-stopping score: validating patients, never test ones
CHOICE_COLUMNS = SETTING_COLUMNS + [CANDIDATE_COLUMN, "candidates", "clients", "validation",
                                    "test", "chosen"]
# Keys that define the encoders and the splits: folders that differ in one of them do not
# share encoders, so picking between them would not be a fine-tuning choice.
ENCODER_KEYS = ("data.", "model.", "pretrain.", "control.", "experiment.seed")
# The grid's lists and bookkeeping: they may differ (a grown grid) and name no candidate.
NOT_A_CANDIDATE = {"pretrain.methods", "finetune.folds", "finetune.n_labeled", "finetune.modes",
                   "finetune.concurrency"}
# What a candidate is: a fine-tuning key, or a federated fine-tuning's aggregation.
CANDIDATE_KEYS = ("finetune.", "federation.strategy", "federation.proximal_mu")


@dataclass
class RunFolder:
    """One candidate: a run folder's flattened config, results and probes."""
    path: Path
    config: dict
    results: pd.DataFrame
    probes: Optional[pd.DataFrame]


def read_run_folder(path: str | Path) -> RunFolder:
    """The config.yaml, results.csv and (when present) probes.csv that ``fcl-ray run`` wrote
    in ``path``; ConfigError naming the folder when it is not one."""
    from fcl_ray.config_io import flatten, load_config, to_dict

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"choose: '{folder}' is not a run folder (expected a folder that "
                          f"'fcl-ray run' wrote, with config.yaml and results.csv)")
    if not (folder / "config.yaml").is_file():
        raise ConfigError(f"choose: run folder '{folder}' has no config.yaml")
    config = flatten(to_dict(load_config(folder / "config.yaml")))
    probes_path = folder / "probes.csv"
    probes = read_probes_csv(probes_path) if probes_path.is_file() else None
    return RunFolder(folder, config, with_seed(read_results_csv(folder)), probes)


def _is_encoder_key(key: str) -> bool:
    return key.startswith(ENCODER_KEYS) and key not in NOT_A_CANDIDATE


def candidate_labels(folders: Sequence[RunFolder]) -> list[str]:
    """A label per folder from the fine-tuning keys in which the folders differ
    (``finetune.encoder_lr_scale=0.1``); folders with the same label are parts of one
    candidate (e.g. one folder per fold or mode). ConfigError when two folders differ in a
    key that defines the encoders, or when all of them are one candidate."""
    if len(folders) < 2:
        raise ConfigError("choose: needs two or more run folders (one per candidate setting)")
    first = folders[0]
    keys = sorted(set().union(*(f.config for f in folders)))
    differing = [k for k in keys if any(f.config.get(k) != first.config.get(k) for f in folders)]
    for key in differing:
        if _is_encoder_key(key):
            other = next(f for f in folders if f.config.get(key) != first.config.get(key))
            raise ConfigError(
                f"choose: run folders '{first.path}' and '{other.path}' differ in {key} "
                f"({first.config.get(key)!r} vs {other.config.get(key)!r}): they do not share "
                f"encoders, so choosing between them is not a fine-tuning choice")
    named = [k for k in differing if k.startswith(CANDIDATE_KEYS) and k not in NOT_A_CANDIDATE]
    labels = [", ".join(f"{k}={f.config.get(k)}" for k in named) for f in folders]
    if len(set(labels)) < 2:
        raise ConfigError(f"choose: the run folders {', '.join(repr(str(f.path)) for f in folders)} "
                          f"have the same fine-tuning settings: nothing to choose between")
    return labels


def candidate_results(folders: Sequence[RunFolder], labels: Sequence[str]
                      ) -> list[tuple[str, pd.DataFrame]]:
    """(label, results) per candidate: the rows of its folders together (a row copied into
    two of them, as a resumed copy of a folder keeps it, counts once); ConfigError when two
    folders of one candidate hold different rows of the same setting."""
    parts: dict[str, list[RunFolder]] = {}
    for folder, label in zip(folders, labels):
        parts.setdefault(label, []).append(folder)
    candidates = []
    for label, members in parts.items():
        rows = pd.concat([f.results for f in members], ignore_index=True).drop_duplicates()
        twice = rows.duplicated(SETTING_COLUMNS + ["client"])
        if twice.any():
            setting = tuple(rows.loc[twice.idxmax(), SETTING_COLUMNS])
            holders = [str(f.path) for f in members
                       if (f.results[SETTING_COLUMNS] == list(setting)).all(axis=1).any()]
            raise ConfigError(f"choose: run folders {', '.join(map(repr, holders))} (the same "
                              f"fine-tuning settings) hold different rows of "
                              f"{_setting_text(setting)}")
        candidates.append((label, rows))
    return candidates


def _setting_text(setting: tuple) -> str:
    return ", ".join(f"{k} {v}" for k, v in zip(SETTING_COLUMNS, setting))


def choose_on_validation(candidates: Sequence[tuple[str, pd.DataFrame]]
                         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(chosen rows, choices table) from (label, results) pairs, one per candidate.

    Per setting (SETTING_COLUMNS), the candidate whose rows have the highest mean validation
    Dice over the clients; its rows are kept with a ``candidate`` column. Candidates of one
    setting must have the same clients. The choices table has a row per (setting, candidate)."""
    groups: dict[tuple, dict[str, pd.DataFrame]] = {}
    for label, frame in candidates:
        if VALIDATION not in frame.columns:
            raise ConfigError(f"choose: the results of {label} have no {VALIDATION} column "
                              f"(finetune.budget=converge writes the validation Dice)")
        for setting, rows in with_seed(frame).groupby(SETTING_COLUMNS, sort=False):
            groups.setdefault(setting, {})[label] = rows
    choices, chosen_rows = [], []
    for setting, rows in groups.items():
        first = next(iter(rows))
        for label, r in rows.items():
            if sorted(r["client"]) != sorted(rows[first]["client"]):
                raise ConfigError(f"choose: {_setting_text(setting)}: {first} has clients "
                                  f"{sorted(rows[first]['client'])} but {label} has "
                                  f"{sorted(r['client'])}")
            if r[VALIDATION].isna().any():
                raise ConfigError(f"choose: {_setting_text(setting)}: {label} has rows "
                                  f"without {VALIDATION}")
        scores = {label: float(r[VALIDATION].mean()) for label, r in rows.items()}
        best = max(scores, key=scores.get)   # the first of equal scores: dicts keep order
        chosen_rows.append(rows[best].assign(**{CANDIDATE_COLUMN: best}))
        for label, r in rows.items():
            choices.append(dict(zip(SETTING_COLUMNS, setting), candidate=label,
                                candidates=len(rows), clients=len(r), validation=scores[label],
                                test=float(r["dice_mean"].mean()), chosen=label == best))
    if not choices:
        raise ConfigError("choose: the run folders have no results rows")
    results = pd.concat(chosen_rows, ignore_index=True)
    table = pd.DataFrame(choices, columns=CHOICE_COLUMNS)
    order = {m: i for i, m in enumerate(_method_order(table["method"]))}
    table = table.sort_values(["finetune_mode", "n_labeled", "fold", SEED_COLUMN, "method"],
                              key=lambda c: c.map(order) if c.name == "method" else c,
                              kind="stable").reset_index(drop=True)
    return results.sort_values(KEY_COLUMNS + [SEED_COLUMN]).reset_index(drop=True), table


def choices_markdown(table: pd.DataFrame) -> str:
    """The choices table as markdown: each setting's candidates, the chosen one in bold."""
    lines = [f"Chosen on {VALIDATION} (mean over clients); test Dice for the record only.", "",
             "| method | mode | N | fold | seed | candidate | validation | test | chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples(index=False):
        mark = "**yes**" if row.chosen else ""
        lines.append(f"| {row.method} | {row.finetune_mode} | {row.n_labeled} | {row.fold} | "
                     f"{row.seed} | {row.candidate} | {row.validation:.3f} | {row.test:.3f} | "
                     f"{mark} |")
    single = table[table["candidates"] == 1]
    if not single.empty:
        lines += ["", f"{len(single)} setting(s) had one candidate only (no choice made): "
                      + "; ".join(f"{r.method} {r.finetune_mode} N={r.n_labeled} fold {r.fold}"
                                  for r in single.itertuples(index=False))]
    return "\n".join(lines) + "\n"


@dataclass
class Choice:
    """What ``fcl-ray choose`` found: the chosen rows (a results set ``fcl-ray report``
    reads), the choices table, and the folders' probes (the encoders are shared)."""
    results: pd.DataFrame
    choices: pd.DataFrame
    probes: Optional[pd.DataFrame]

    @property
    def text(self) -> str:
        return choices_markdown(self.choices)

    def write(self, out_dir: str | Path) -> list[Path]:
        """results.csv (with a candidate column), choices.csv, choices.md and probes.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "results.csv", out / "choices.csv", out / "choices.md"]
        self.results.to_csv(paths[0], index=False)
        self.choices.to_csv(paths[1], index=False)
        paths[2].write_text(self.text)
        if self.probes is not None:
            paths.append(out / "probes.csv")
            self.probes.to_csv(paths[-1], index=False)
        return paths


def choose(run_folders: Sequence[str | Path]) -> Choice:
    """Read the run folders, check that they share encoders, and choose per setting."""
    folders = [read_run_folder(p) for p in run_folders]
    labels = candidate_labels(folders)
    results, table = choose_on_validation(candidate_results(folders, labels))
    probes = [f.probes for f in folders if f.probes is not None]
    merged = (pd.concat(probes, ignore_index=True).drop_duplicates(PROBE_COLUMNS[:4])
              .reset_index(drop=True) if probes else None)
    return Choice(results, table, merged)
