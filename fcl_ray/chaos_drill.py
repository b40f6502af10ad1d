"""A chaos drill: run ``fcl-ray run`` as a separate driver process and hit it from outside.

What a real failure looks like, so that is what the drill does: the federation runs in its
own driver process (``python -m fcl_ray run CONFIG --set ...``) on a Ray cluster the caller
started, and a *chaos monkey* in the caller's process follows the run's progress by reading
``<output_dir>/rounds.jsonl`` (the driver appends one line per finished pre-training round)
and, at the rounds of a :func:`fcl_ray.chaos.chaos_schedule`, sends real signals:

- ``kill_client``: SIGKILL to a client actor process (found by its Ray process title,
  ``ray::ClientActor...``, among the descendants of the caller, whose ``ray.init`` started
  the raylet that forks the workers: the actors of any other Ray cluster on the machine are
  never touched);
- ``straggle``: SIGSTOP to a client process, SIGCONT ``straggle_s`` later (longer than
  ``federation.round_timeout_s``);
- ``kill_driver``: SIGKILL to the driver process, then the same command with ``--resume``.

No Ray import here (the caller owns the cluster and passes its address); only ``/proc``,
signals and subprocesses. :func:`run_figures` reads what the run left (rounds.jsonl,
results.csv, the MLflow store) into the drill's figures; :func:`compare` sets a chaos run
against the fault-free one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from fcl_ray.chaos import KILL_CLIENT, KILL_DRIVER, STRAGGLE, ChaosEvent

CLIENT_TITLE = b"ray::ClientActor"   # Ray's process title of a client actor (+ ".<method>")
RESULT_KEY = ["method", "finetune_mode", "n_labeled", "fold", "client"]
PROBE_KEY = ["method", "fold", "client", "probe"]   # a probes.csv row


class DrillError(RuntimeError):
    """The drill could not be carried out (a driver failed, the run timed out)."""


# ----------------------------------------------------------------------------- processes
def _parent_pids() -> dict[int, int]:
    """{pid: parent pid} of every process readable in /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:        # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after it
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def client_pids(root: Optional[int] = None) -> list[int]:
    """The pids of the client actor processes below ``root`` (default: this process), sorted.
    Restarting actors whose title is not set yet (``ray::IDLE``) are not among them."""
    root = os.getpid() if root is None else root
    parents = _parent_pids()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(CLIENT_TITLE):
                found.append(pid)
        except OSError:
            continue
    return sorted(found)


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


# ----------------------------------------------------------------------------- the run
def read_rounds(out_dir: Path) -> list[dict]:
    """The pre-training round records the driver(s) wrote so far (a half-written last line,
    possible while a driver is appending, is left for the next read)."""
    path = Path(out_dir) / "rounds.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def driver_command(config: str, overrides: list[str], resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "fcl_ray", "run", str(config)]
    for item in overrides:
        cmd += ["--set", item]
    return cmd + (["--resume"] if resume else [])


@dataclass
class DrillRun:
    """What happened during one drill run (the figures are read afterwards from its files)."""
    out_dir: Path
    events: list[dict] = field(default_factory=list)      # the faults as carried out
    drivers: list[dict] = field(default_factory=list)     # each driver process: exit, seconds
    wall_s: float = 0.0


class ChaosMonkey:
    """Carries out a schedule against a running driver; :meth:`run` drives the whole run."""

    def __init__(self, config: str, overrides: list[str], out_dir: Path,
                 schedule: list[ChaosEvent], ray_address: str, straggle_s: float,
                 timeout_s: float = 1800.0, kill_delay_s: float = 0.3,
                 log: Callable[[str], None] = print):
        self.config, self.overrides, self.out_dir = config, overrides, Path(out_dir)
        self.pending = sorted(schedule, key=lambda e: e.round)
        self.env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONUNBUFFERED": "1"}
        self.straggle_s, self.timeout_s, self.kill_delay_s = straggle_s, timeout_s, kill_delay_s
        self.log = log
        self.frozen: dict[int, float] = {}   # pid -> when to SIGCONT it
        self.record = DrillRun(self.out_dir)

    def _start_driver(self, resume: bool) -> subprocess.Popen:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_file = (self.out_dir / "driver.log").open("a")   # both drivers, one after another
        self.log(f"chaos: starting the driver{' with --resume' if resume else ''}")
        proc = subprocess.Popen(driver_command(self.config, self.overrides, resume),
                                stdout=log_file, stderr=subprocess.STDOUT, env=self.env)
        log_file.close()   # the child holds its own copy
        self._driver_start = time.monotonic()
        return proc

    def _end_driver(self, proc: subprocess.Popen, how: str) -> None:
        self.record.drivers.append({"pid": proc.pid, "exit": proc.returncode, "ended_by": how,
                                    "seconds": round(time.monotonic() - self._driver_start, 1)})

    def _thaw(self, everyone: bool = False) -> None:
        now = time.monotonic()
        for pid, until in list(self.frozen.items()):
            if everyone or now >= until:
                _signal(pid, signal.SIGCONT)
                del self.frozen[pid]

    def _fire(self, event: ChaosEvent, proc: subprocess.Popen, done: int) -> Optional[str]:
        """Carry out ``event``; returns "driver" when the driver was killed."""
        entry = {**event.to_dict(), "after_round_recorded": done,
                 "at_s": round(time.monotonic() - self.started, 1)}
        if event.kind == KILL_DRIVER:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.record.events.append({**entry, "pid": proc.pid, "done": True})
            self.log(f"chaos: round {event.round}: SIGKILL to the driver (pid {proc.pid})")
            return "driver"
        alive = [p for p in client_pids() if p not in self.frozen]
        if not alive:
            self.record.events.append({**entry, "done": False, "why": "no client process"})
            self.log(f"chaos: round {event.round}: {event.kind} skipped, no client process")
            return None
        victim = alive[event.pick % len(alive)]
        if event.kind == KILL_CLIENT:
            done_ok = _signal(victim, signal.SIGKILL)
            self.log(f"chaos: round {event.round}: SIGKILL to client process {victim}")
        elif event.kind == STRAGGLE:
            done_ok = _signal(victim, signal.SIGSTOP)
            if done_ok:
                self.frozen[victim] = time.monotonic() + self.straggle_s
            self.log(f"chaos: round {event.round}: SIGSTOP to client process {victim} for "
                     f"{self.straggle_s:g}s")
        else:
            raise ValueError(f"unknown chaos event kind '{event.kind}'")
        self.record.events.append({**entry, "pid": victim, "done": done_ok})
        return None

    def run(self) -> DrillRun:
        """Start the driver, act on the schedule, restart the driver with --resume after a
        kill, and return when a driver has exited on its own (DrillError if it failed)."""
        self.started = time.monotonic()
        proc = self._start_driver(resume=False)
        due_at: Optional[float] = None   # when the next event's kill delay is over
        try:
            while True:
                self._thaw()
                if time.monotonic() - self.started > self.timeout_s:
                    proc.kill()
                    proc.wait()
                    self._end_driver(proc, "drill timeout")
                    raise DrillError(f"the run did not finish within {self.timeout_s:.0f}s; "
                                     f"see {self.out_dir / 'driver.log'}")
                if proc.poll() is not None:
                    self._end_driver(proc, "itself")
                    if proc.returncode != 0:
                        raise DrillError(f"the driver exited with {proc.returncode}; see "
                                         f"{self.out_dir / 'driver.log'}")
                    break
                done = len({r["round"] for r in read_rounds(self.out_dir)})
                if self.pending and done >= self.pending[0].round - 1:
                    # Round r is under way: act a moment later, inside the round (a kill in
                    # the driver's bookkeeping between rounds is a different fault).
                    due_at = due_at or time.monotonic() + self.kill_delay_s
                    if time.monotonic() >= due_at:
                        due_at = None
                        if self._fire(self.pending.pop(0), proc, done) == "driver":
                            self._end_driver(proc, "chaos SIGKILL")
                            self._thaw(everyone=True)
                            proc = self._start_driver(resume=True)
                time.sleep(0.05)
        finally:
            self._thaw(everyone=True)   # never leave a stopped process behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.record.wall_s = round(time.monotonic() - self.started, 1)
        missed = [e.to_dict() for e in self.pending]
        if missed:
            self.record.events += [{**e, "done": False, "why": "run ended first"} for e in missed]
        return self.record


# ----------------------------------------------------------------------------- figures
def mlflow_runs(uri: str, experiment: str) -> list[dict]:
    """Every MLflow run of ``experiment`` in the store: id, status, metric keys, and the
    steps logged for each key (from the metric history)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = []
    for run in client.search_runs([exp.experiment_id]):
        keys = sorted(run.data.metrics)
        steps = {k: sorted({m.step for m in client.get_metric_history(run.info.run_id, k)})
                 for k in keys}
        runs.append({"run_id": run.info.run_id, "status": run.info.status,
                     "resumed": run.data.tags.get("resumed"), "metric_keys": keys,
                     "steps": steps})
    return runs


def run_figures(record: DrillRun, rounds: int, clients: int, tracking_uri: Optional[str],
                experiment: str) -> dict:
    """The figures of one run: rounds completed, client-rounds, drops by kind, results rows
    and Dice per client, MLflow runs and their status."""
    records = read_rounds(record.out_dir)
    completed = sorted({r["round"] for r in records})
    drops: dict[str, int] = {}
    for r in records:   # every attempt's drops: a retried attempt's too
        for dropped in [*r.get("dropped_retried", []), r["dropped"]]:
            for why in dropped.values():
                kind = why.split(" ")[0].split(":")[0]   # died / late / rejoining / failed
                drops[kind] = drops.get(kind, 0) + 1
    results_path = record.out_dir / "results.csv"
    results = pd.read_csv(results_path) if results_path.exists() else pd.DataFrame()
    probes_path = record.out_dir / "probes.csv"   # probes.enabled=true only
    probes = pd.read_csv(probes_path) if probes_path.exists() else pd.DataFrame()
    figures = {
        "rounds_completed": len(completed), "rounds": rounds,
        "rounds_recorded_twice": len(records) - len(completed),
        "client_rounds_participated": sum(len(r["participants"]) for r in records),
        "client_rounds_possible": rounds * clients,
        "drops": drops,
        "dropped_per_round": {str(r["round"]): r["dropped"] for r in records if r["dropped"]},
        "dropped_retried_per_round": {str(r["round"]): r["dropped_retried"] for r in records
                                      if r.get("dropped_retried")},
        # each restarted client's return: the round it was back in, rounds it missed, the
        # round of its own state it restored (None: started afresh, and why)
        "rejoins": [{"round": r["round"], "client": int(cid), **entry}
                    for r in records for cid, entry in r.get("rejoined", {}).items()],
        "results_rows": len(results),
        "dice": {_row_label(row): float(row["dice_mean"]) for _, row in results.iterrows()},
        "probes": {"/".join(f"{k}={row[k]}" for k in PROBE_KEY): float(row["value"])
                   for _, row in probes.iterrows()},
        "events": record.events, "drivers": record.drivers, "wall_s": record.wall_s,
    }
    if tracking_uri:
        figures["mlflow"] = mlflow_runs(tracking_uri, experiment)
    return figures


def _row_label(row) -> str:
    return "/".join(f"{k}={row[k]}" for k in RESULT_KEY)


def compare(reference: dict, chaos: dict) -> dict:
    """The chaos run against the fault-free one: Dice differences over the common rows,
    rows missing, MLflow status and metric keys."""
    common = sorted(set(reference["dice"]) & set(chaos["dice"]))
    diffs = {k: chaos["dice"][k] - reference["dice"][k] for k in common}
    ref_probes, chaos_probes = reference.get("probes", {}), chaos.get("probes", {})
    probe_diffs: dict[str, list[float]] = {}   # by probe: |difference| per common row
    for key in sorted(set(ref_probes) & set(chaos_probes)):
        probe_diffs.setdefault(key.rsplit("probe=", 1)[1], []).append(
            abs(chaos_probes[key] - ref_probes[key]))
    ref_keys = set().union(*(r["metric_keys"] for r in reference.get("mlflow", [])))
    chaos_keys = set().union(*(r["metric_keys"] for r in chaos.get("mlflow", [])))

    def steps(figures: dict, key: str) -> set[int]:
        return set().union(*(r["steps"].get(key, []) for r in figures.get("mlflow", [])))

    # Federation-wide metrics (not per client: a dropped client logs nothing that round)
    # must have every step the fault-free run has.
    steps_missing = {key: sorted(steps(reference, key) - steps(chaos, key))
                     for key in sorted(ref_keys) if "_client" not in key}
    return {
        "rounds_completed_fraction": chaos["rounds_completed"] / chaos["rounds"],
        "dice_diff": diffs,
        "mean_abs_dice_diff": (sum(abs(d) for d in diffs.values()) / len(diffs)
                               if diffs else float("nan")),
        "mean_abs_probe_diff": {probe: sum(d) / len(d) for probe, d in probe_diffs.items()},
        "rows_missing": sorted(set(reference["dice"]) - set(chaos["dice"])),
        "rows_extra": sorted(set(chaos["dice"]) - set(reference["dice"])),
        "mlflow_runs": len(chaos.get("mlflow", [])),
        "mlflow_statuses": [r["status"] for r in chaos.get("mlflow", [])],
        "mlflow_all_finished": bool(chaos.get("mlflow")) and all(
            r["status"] == "FINISHED" for r in chaos["mlflow"]),
        "metric_keys_missing": sorted(ref_keys - chaos_keys),
        "metric_keys_extra": sorted(chaos_keys - ref_keys),
        "metric_steps_missing": {k: v for k, v in steps_missing.items() if v},
    }
