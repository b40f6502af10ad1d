"""``fcl-ray bench``: what the federation costs over the clients' own compute.

For a fixed workload it measures, in one run:

* seconds per round of FCL pre-training and of federated fine-tuning on Ray (median of the
  rounds after a warm-up round), with exchange (weights in/out, features) and aggregation;
* the reference: the same local steps run one client after another in this process with
  plain PyTorch (no Ray, no weights or features moved, no health figures);
* overhead ratio = round time / (reference time / parallel slots), slots = min(C, CPUs for
  clients) on CPU (or C on GPU); its inverse is the pre-training step rate against the plain
  loop, with the collapse guard's health figures on, read from ``pretrain.health_source``
  (``--set pretrain.health_source=probe`` measures the probe's cost);
* on CPU, a second pre-training reference that does not assume that ``slots`` processes run
  ``slots`` times as fast as one: the same plain loop in ``slots`` concurrent processes (each
  its share of the clients, the actors' threads, rounds started together), timed by its
  slowest process; ``pretrain_overhead_parallel`` = round time / that;
* time to first round (process start to the end of round 1), bytes per round, peak memory
  per client actor;
* where each client actor's start-up went (:meth:`ClientSite.breakdown`): module imports,
  data build, method build, its first round's compute, and resident memory after each. The
  per-actor figures go into ``<name>.json`` next to the plot; the table has their means.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import queue
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import ray
import torch

from fcl_ray.config import Config
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.cluster import (actor_handles, client_cpus, connect_ray,
                                        create_federation)

# The workload the targets are stated for: 64x64 slices, batch 8, widths 16-32-64-128.
DEFAULT_WORKLOAD = [
    "data.image_size=64", "data.cases_per_client=6", "data.folds=3", "data.partitions=4",
    "model.features=[16,32,64,128,128,16]", "pretrain.methods=[fcl]",
    "pretrain.volumes_per_batch=2", "finetune.batch_size=8", "finetune.n_labeled=[2]",
    "federation.checkpoint_every=0", "tracking.enabled=false",
]


@dataclass
class BenchRow:
    clients: int
    local_steps: int
    slots: float
    pretrain_round_s: float
    pretrain_reference_s: float
    pretrain_overhead: float
    pretrain_reference_parallel_s: float   # the plain loop in `slots` processes (CPU; else NaN)
    pretrain_overhead_parallel: float      # round time / that reference
    exchange_aggregate_fraction: float
    health_source: str                   # pretrain.health_source of the federation's rounds
    health_fraction: float               # of a round: the slowest client's health figures
    finetune_round_s: float
    finetune_reference_s: float
    finetune_overhead: float
    time_to_first_round_s: float
    bytes_per_round_mb: float
    peak_memory_mb_per_client: float
    client_actors: int = 0               # processes hosting the clients
    ready_s: float = 0.0                 # create_federation to every client built (method too)
    import_s: float = 0.0                # means over the client actors of their breakdown
    data_s: float = 0.0
    method_s: float = 0.0
    first_round_compute_s: float = 0.0
    rss_after_imports_mb: float = 0.0
    rss_after_data_mb: float = 0.0
    rss_after_method_mb: float = 0.0
    memory_mb_per_client: float = 0.0    # all client processes' peaks together / C
    driver_start_s: float = 0.0          # process start to the bench's first line (imports)
    ray_start_s: float = 0.0             # ray.init (0 once Ray is up)
    coordinator_peak_mb: float = 0.0


def seconds_since_process_start() -> float:
    """Wall time since this process started (Linux /proc), for 'time to first round'."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):   # not Linux: count from the bench's start
        return time.perf_counter() - _IMPORTED_AT


_IMPORTED_AT = time.perf_counter()


def _plain_clients(cfg: Config, threads: int) -> tuple[list, list]:
    """Every client of ``cfg`` built in this process for the plain loop, set up for
    pre-training, with the remote features the federation would hand each (the loss sees the
    same sizes). No health figures: ``health_source=probe`` keeps nothing from the steps."""
    # Imported here: MONAI is not loaded before the federation's first round, as in `fcl-ray run`
    from fcl_ray.federation.site import ClientSite
    from fcl_ray.methods.bank import merge_remote

    torch.set_num_threads(threads)
    cfg_dict = to_dict(replace(cfg, pretrain=replace(cfg.pretrain, health_source="probe")))
    gpus = cfg.federation.num_gpus_per_client
    clients = [ClientSite(cfg_dict, c, threads, gpus) for c in range(cfg.data.clients)]
    for c in clients:
        c.start_pretraining(cfg.pretrain.methods[0], 0)
    shared = {c.client_id: c.method.shared_features() for c in clients}
    remotes = [merge_remote(shared, c.client_id, c.device, cfg.pretrain.remote_sample,
                            c._remote_sample_rng(1)) if c.method.shares_features else None
               for c in clients]
    return clients, remotes


def reference_seconds(cfg: Config, rounds: int, threads: int) -> tuple[float, float]:
    """Median seconds of one round of every client's local steps, one client after another
    in this process: (pre-training, fine-tuning). No Ray, nothing exchanged, no health
    figures: the plain loop."""
    clients, remotes = _plain_clients(cfg, threads)
    pretrain = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        for c, remote in zip(clients, remotes):
            c.method.train_round(cfg.pretrain.local_steps, remote)
        if r:                                       # round 0 is the warm-up
            pretrain.append(time.perf_counter() - start)
    trainers = [c._new_trainer(None, 0, cfg.finetune.n_labeled[0]) for c in clients]
    finetune = []
    for r in range(rounds + 1):
        start = time.perf_counter()
        for t in trainers:
            t.train(cfg.finetune.local_steps)
        if r:
            finetune.append(time.perf_counter() - start)
    return statistics.median(pretrain), statistics.median(finetune)


BARRIER_TIMEOUT_S = 600.0   # a reference process that waits longer for the others has failed


def _plain_share(cfg: Config, threads: int, share: list[int], rounds: int, barrier,
                 durations) -> None:
    """One process of :func:`parallel_reference_seconds`: pre-training rounds of the clients
    in ``share`` (every process builds all clients, so remote features have their sizes),
    each round started with the others at ``barrier``; its round seconds go to ``durations``."""
    clients, remotes = _plain_clients(cfg, threads)
    mine = [(clients[i], remotes[i]) for i in share]
    seconds = []
    for _ in range(rounds + 1):
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        start = time.perf_counter()
        for client, remote in mine:
            client.method.train_round(cfg.pretrain.local_steps, remote)
        seconds.append(time.perf_counter() - start)
    durations.put(seconds)


def _next_result(durations, workers) -> list[float]:
    """The next process's round seconds; a process that died first is an error, not a hang."""
    while True:
        try:
            return durations.get(timeout=1.0)
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a plain-loop reference process exited with code {dead[0]}")


def parallel_reference_seconds(cfg: Config, rounds: int, threads: int, processes: int) -> float:
    """Median seconds of a pre-training round of the plain loop run by ``processes``
    concurrent processes (spawned, ``threads`` torch threads each, clients dealt round-robin),
    a round lasting as long as its slowest process; after a warm-up round. What this machine
    can do in parallel without Ray, rather than one process's time divided by the slots."""
    context = multiprocessing.get_context("spawn")   # no fork of a process that holds Ray
    barrier, durations = context.Barrier(processes), context.Queue()
    shares = [list(range(p, cfg.data.clients, processes)) for p in range(processes)]
    workers = [context.Process(target=_plain_share, daemon=True,
                               args=(cfg, threads, share, rounds, barrier, durations))
               for share in shares]
    for worker in workers:
        worker.start()
    try:
        per_process = [_next_result(durations, workers) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return statistics.median(max(p[r] for p in per_process) for r in range(1, rounds + 1))


@contextmanager
def bench_federation(cfg: Config):
    """``(clients, coordinator)`` of a new federation, killed on leaving the block (each
    benchmark row starts its own)."""
    clients, coordinator = create_federation(cfg)
    try:
        yield clients, coordinator
    finally:
        for actor in actor_handles(clients) + [coordinator]:
            ray.kill(actor)


def federation_seconds(cfg: Config, rounds: int, process_start: float) -> dict:
    """Round times of the real federation on Ray (median after the first round)."""
    created = time.perf_counter()
    with bench_federation(cfg) as (clients, coordinator):
        ray.get(coordinator.start_pretraining.remote(cfg.pretrain.methods[0], 0))
        ready = time.perf_counter() - created
        walls, stats = [], []
        for r in range(rounds + 1):
            start = time.perf_counter()
            stats.append(ray.get(coordinator.pretrain_round.remote()))
            walls.append(time.perf_counter() - start)
            if r == 0:
                first_round = time.perf_counter() - process_start
        steady = stats[1:]
        exchange = [s.aggregate_seconds + max(c["exchange_seconds"] for c in s.clients)
                    for s in steady]
        health = [max(c["health_seconds"] for c in s.clients) for s in steady]
        ray.get(coordinator.start_federated_finetune.remote("random", 0, cfg.finetune.n_labeled[0]))
        ft_walls = []
        for r in range(rounds + 1):
            start = time.perf_counter()
            ray.get(coordinator.finetune_round.remote())
            ft_walls.append(time.perf_counter() - start)
        # one read of each process's peak feeds both memory figures, so they agree (a second
        # read could see the peak grown by the calls in between)
        actors = ray.get([c.breakdown.remote() for c in clients])
        peak = max(a["peak_rss_mb"] for a in actors)
        processes = {a["pid"]: a["peak_rss_mb"] for a in actors}   # hosts count once
        coordinator_info = ray.get(coordinator.process_info.remote())
        return {"ready_s": ready, "actors": actors, **actor_means(actors),
                "memory_mb_per_client": sum(processes.values()) / len(clients),
                "coordinator_peak_mb": coordinator_info["peak_rss_mb"],
                "coordinator_heavy_modules": coordinator_info["heavy_modules"],
                "pretrain_round_s": statistics.median(walls[1:]),
                "exchange_aggregate_fraction": statistics.median(
                    e / w for e, w in zip(exchange, walls[1:])),
                "health_fraction": statistics.median(h / w for h, w in zip(health, walls[1:])),
                "finetune_round_s": statistics.median(ft_walls[1:]),
                "time_to_first_round_s": first_round,
                "bytes_per_round_mb": statistics.median(
                    (s.traffic.bytes_weights + s.traffic.bytes_features) / 1e6 for s in steady),
                "peak_memory_mb_per_client": peak}


BREAKDOWN = {"import_s": "import_seconds", "data_s": "data_seconds",
             "method_s": "method_seconds", "first_round_compute_s": "first_round_compute_seconds",
             "rss_after_imports_mb": "rss_after_imports_mb", "rss_after_data_mb": "rss_after_data_mb",
             "rss_after_method_mb": "rss_after_method_mb"}


def actor_means(breakdowns: list[dict]) -> dict:
    """Means over client actor processes (one breakdown per process) of the breakdown."""
    per_process = list({b["pid"]: b for b in breakdowns}.values())
    return {"client_actors": len(per_process),
            **{column: statistics.mean(b.get(key, 0.0) for b in per_process)
               for column, key in BREAKDOWN.items()}}


def run_bench(client_counts: list[int], local_steps: int, rounds: int,
              overrides: list[str] = (), log: Callable[[str], None] = print,
              process_start: Optional[float] = None) -> pd.DataFrame:
    """The whole benchmark: one row per client count.

    Time to first round counts from ``process_start`` (the CLI passes the process's start)
    for the first client count; later ones count from their own set-up, Ray already up."""
    if process_start is None:
        process_start = time.perf_counter()
    rows, actors = [], []   # actors: every client actor's breakdown, per client count
    for n in client_counts:
        cfg = load_config(None, DEFAULT_WORKLOAD + [f"data.clients={n}",
                                                    f"pretrain.local_steps={local_steps}",
                                                    f"finetune.local_steps={local_steps}",
                                                    *overrides])
        driver_start = time.perf_counter() - process_start
        ray_start = time.perf_counter()
        connect_ray(cfg)
        ray_start = time.perf_counter() - ray_start
        cpus = client_cpus(cfg)
        gpu = cfg.federation.num_gpus_per_client > 0
        slots = float(n) if gpu else min(float(n), cpus * n)
        threads = max(1, int(cpus))
        fed = federation_seconds(cfg, rounds, process_start)
        actors.append({"clients": n, "local_steps": local_steps, "actors": fed.pop("actors"),
                       "coordinator_heavy_modules": fed.pop("coordinator_heavy_modules")})
        ref_pre, ref_ft = reference_seconds(cfg, rounds, threads)
        processes = int(slots)
        ref_parallel = (float("nan") if gpu or processes < 1
                        else parallel_reference_seconds(cfg, rounds, threads, processes))
        row = BenchRow(clients=n, local_steps=local_steps, slots=slots,
                       pretrain_reference_parallel_s=ref_parallel,
                       pretrain_overhead_parallel=fed["pretrain_round_s"] / ref_parallel,
                       health_source=cfg.pretrain.health_source,
                       driver_start_s=driver_start, ray_start_s=ray_start,
                       pretrain_reference_s=ref_pre, finetune_reference_s=ref_ft,
                       pretrain_overhead=fed["pretrain_round_s"] / (ref_pre / slots),
                       finetune_overhead=fed["finetune_round_s"] / (ref_ft / slots), **fed)
        log(f"C={n:2d} steps={local_steps}: pre-train round {row.pretrain_round_s:.2f}s "
            f"(reference {ref_pre:.2f}s / {slots:g} slots -> overhead {row.pretrain_overhead:.2f}; "
            f"{processes} concurrent plain processes {ref_parallel:.2f}s -> overhead "
            f"{row.pretrain_overhead_parallel:.2f}; "
            f"exchange+aggregate {100 * row.exchange_aggregate_fraction:.1f}%, health "
            f"({row.health_source}) {100 * row.health_fraction:.1f}%), fine-tune round "
            f"{row.finetune_round_s:.2f}s (overhead {row.finetune_overhead:.2f}), first round "
            f"after {row.time_to_first_round_s:.1f}s, {row.bytes_per_round_mb:.1f} MB/round, "
            f"peak {row.peak_memory_mb_per_client:.0f} MB/client actor, "
            f"{row.memory_mb_per_client:.0f} MB/client, coordinator {row.coordinator_peak_mb:.0f} MB")
        log(f"      driver imports {row.driver_start_s:.1f}s, Ray start {row.ray_start_s:.1f}s; "
            f"{row.client_actors} client actors ready {row.ready_s:.1f}s after creation; "
            f"each (mean): imports {row.import_s:.1f}s, data {row.data_s:.2f}s, method "
            f"{row.method_s:.2f}s, first-round compute {row.first_round_compute_s:.2f}s; "
            f"resident after imports {row.rss_after_imports_mb:.0f} MB, after data "
            f"{row.rss_after_data_mb:.0f} MB, after method {row.rss_after_method_mb:.0f} MB")
        rows.append(asdict(row))
        process_start = time.perf_counter()   # the next C's "first round" counts from here
    MEASURED_ACTORS.extend(actors)   # for the JSON (plot_bench), across run_bench calls
    return pd.DataFrame(rows)


MEASURED_ACTORS: list[dict] = []   # every run_bench call of this process appends here


def write_json(table: pd.DataFrame, path: Path) -> None:
    """The table's rows and every client actor's breakdown measured in this process."""
    path.write_text(json.dumps({"rows": table.to_dict("records"), "actors": MEASURED_ACTORS},
                               indent=1) + "\n")


def plot_bench(table: pd.DataFrame, path: Path) -> None:
    """Round time and overhead ratio against the number of clients; also writes the JSON
    (rows + per-actor breakdowns, :func:`write_json`) next to the plot (``<name>.json``)."""
    write_json(table, path.with_suffix(".json"))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for steps, group in table.groupby("local_steps"):
        left.plot(group.clients, group.pretrain_round_s, "o-", label=f"FCL round, {steps} steps")
        left.plot(group.clients, group.pretrain_reference_s / group.slots, "x--",
                  label=f"reference / slots, {steps} steps")
        right.plot(group.clients, group.pretrain_overhead, "o-", label=f"pre-train, {steps} steps")
        right.plot(group.clients, group.finetune_overhead, "s--", label=f"fine-tune, {steps} steps")
    left.set(xlabel="clients C", ylabel="seconds per round", xscale="log", yscale="log")
    right.axhline(1.10, color="grey", lw=0.8)
    right.set(xlabel="clients C", ylabel="overhead ratio", xscale="log")
    for ax in (left, right):
        ax.set_xticks(sorted(table.clients.unique()), labels=sorted(table.clients.unique()))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
