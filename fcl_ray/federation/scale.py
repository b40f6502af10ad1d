"""``fcl-ray bench --scale``: pre-training rounds with many logical clients.

Where :mod:`fcl_ray.federation.bench` prices the federation against plain PyTorch at a few
clients, this measures how a round grows with the number of clients C, hosted
``federation.clients_per_actor`` to a process, with and without ``federation.clients_per_round``
(clients sampled per round). Work per client is fixed (the bench workload, ``local_steps`` per
round), so with sampling a round's work is fixed too and its time should not grow with C;
without sampling it should grow linearly (each client merges at most
``pretrain.remote_sample`` remote features, so no C^2 term is left).

Per row: the median round wall time after a warm-up round and where it went, on the critical
path (the client host whose participants took longest):

* compute: that host's participants' local steps, one after another;
* health: their collapse guard's figures (``pretrain.health_source``: the head on the last
  step's features, or a forward pass over the probe slices; ``pretrain.health_every``);
* exchange: the rest of their calls (global weights in, remote sample merged, weights and
  features out);
* aggregation: the coordinator's FedAvg;
* waiting: the remainder (Ray scheduling and transfers, the coordinator's pool, other hosts).

Also bytes sent and received per participating client per round, and memory per logical
client (every host process's peak resident memory together / C). There is no plain-PyTorch
reference: 256 clients in one process would need the memory that hosting avoids.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Optional

import ray
from ray.exceptions import RayError

from fcl_ray.config_io import load_config
from fcl_ray.core.events import RoundReport
from fcl_ray.federation.bench import DEFAULT_WORKLOAD, bench_federation
from fcl_ray.federation.cluster import connect_ray
from fcl_ray.federation.coordinator import FederationError


def critical_path(stats: RoundReport, host_of: dict[int, object]) -> dict:
    """Split one round (the coordinator's report, as the driver gets it) into compute,
    exchange, aggregation and waiting along the host whose participants took longest.
    ``host_of`` maps a client id to its process (hosted clients run one after another)."""
    per_host: dict[object, list[float]] = {}
    for client in stats.clients:
        spent = per_host.setdefault(host_of[client["client"]], [0.0, 0.0, 0.0])
        spent[0] += client["compute_seconds"]
        spent[1] += client.get("health_seconds", 0.0)
        spent[2] += client["exchange_seconds"]
    compute, health, exchange = max(per_host.values(), key=sum)
    aggregation = stats.aggregate_seconds
    wall = stats.round_seconds
    return {"compute_s": compute, "health_s": health, "exchange_s": exchange,
            "aggregation_s": aggregation,
            "waiting_s": max(0.0, wall - compute - health - exchange - aggregation),
            "busiest_host_clients": max((sum(1 for c in stats.clients
                                             if host_of[c["client"]] == h) for h in per_host))}


def _median_of(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def scale_row(clients: int, clients_per_actor: int, clients_per_round: Optional[int],
              local_steps: int, rounds: int, overrides: list[str] = ()) -> dict:
    """One federation of ``clients`` logical clients: ``rounds`` timed pre-training rounds
    after a warm-up round; the figures of one row of the scale table."""
    cfg = load_config(None, DEFAULT_WORKLOAD + [
        f"data.clients={clients}", f"federation.clients_per_actor={clients_per_actor}",
        f"federation.clients_per_round={clients_per_round or 'null'}",
        f"pretrain.local_steps={local_steps}", *overrides])
    connect_ray(cfg)
    created = time.perf_counter()
    with bench_federation(cfg) as (handles, coordinator):
        ray.get(coordinator.start_pretraining.remote(cfg.pretrain.methods[0], 0))
        ready_s = time.perf_counter() - created
        host_of = {i: h._actor_id for i, h in enumerate(handles)}
        stats = [ray.get(coordinator.pretrain_round.remote()) for _ in range(rounds + 1)]
        steady = stats[1:]                       # round 1 pays the first-call warm-up
        split = [critical_path(s, host_of) for s in steady]
        participants = [len(s.participants) for s in steady]
        received = [statistics.mean(s.traffic.bytes_received_per_client.values()) for s in steady]
        sent = [statistics.mean(s.traffic.bytes_sent_per_client.values()) for s in steady]
        hosts = {b["pid"]: b for b in ray.get([h.breakdown.remote() for h in handles])}
        coordinator_info = ray.get(coordinator.process_info.remote())
    return {
        "clients": clients, "clients_per_actor": clients_per_actor,
        "clients_per_round": clients_per_round or clients, "local_steps": local_steps,
        "client_actors": len(hosts), "ready_s": ready_s,
        "round_s": statistics.median(s.round_seconds for s in steady),
        "rounds_s": [s.round_seconds for s in steady],
        "participants": statistics.median(participants),
        **{key: _median_of(split, key) for key in
           ("compute_s", "health_s", "exchange_s", "aggregation_s", "waiting_s",
            "busiest_host_clients")},
        "received_mb_per_client": statistics.median(received) / 1e6,
        "sent_mb_per_client": statistics.median(sent) / 1e6,
        "pool_mb": statistics.median(s.traffic.bytes_pool or 0 for s in steady) / 1e6,
        "memory_mb_per_client": sum(b["peak_rss_mb"] for b in hosts.values()) / clients,
        "host_peak_mb": sorted(round(b["peak_rss_mb"]) for b in hosts.values()),
        "coordinator_peak_mb": coordinator_info["peak_rss_mb"],
    }


def run_scale(client_counts: list[int], client_actors: int, clients_per_round: int,
              local_steps: int, rounds: int, overrides: list[str] = (),
              log: Callable[[str], None] = print, failed: Optional[list] = None) -> list[dict]:
    """Every client count with all clients in every round, then with ``clients_per_round``
    sampled (a count at or above C is all clients: that row is not run twice); always
    ``client_actors`` host processes, C / client_actors logical clients each. A row that
    fails (a host killed for memory, say) is logged and appended to ``failed``; the others
    are still measured."""
    rows, failed = [], failed if failed is not None else []
    for sampled in (None, clients_per_round):
        for n in client_counts:
            if sampled and sampled >= n:
                continue
            per_actor = -(-n // client_actors)
            try:
                row = scale_row(n, per_actor, sampled, local_steps, rounds, overrides)
            except (RayError, FederationError) as err:   # e.g. out of memory at large C
                first_line = str(err).strip().splitlines()[0][:300]
                log(f"C={n:3d}, {sampled or n} per round: failed ({type(err).__name__}: "
                    f"{first_line}); the other rows are kept")
                failed.append({"clients": n, "clients_per_round": sampled or n,
                               "clients_per_actor": per_actor, "error": first_line})
                continue
            rows.append(row)
            log(f"C={n:3d} ({row['client_actors']} actors x {per_actor}), "
                f"{row['clients_per_round']:3d} per round: round {row['round_s']:.2f}s = compute "
                f"{row['compute_s']:.2f} + health {row['health_s']:.2f} + exchange "
                f"{row['exchange_s']:.2f} + aggregation "
                f"{row['aggregation_s']:.3f} + waiting {row['waiting_s']:.2f} (busiest host "
                f"{row['busiest_host_clients']:g} clients); per client: received "
                f"{row['received_mb_per_client']:.2f} MB, sent {row['sent_mb_per_client']:.2f} MB, "
                f"memory {row['memory_mb_per_client']:.0f} MB; ready {row['ready_s']:.1f}s")
    return rows


def scale_summary(rows: list[dict], clients_per_round: int) -> dict:
    """The ratios the targets are stated in, largest C over smallest: round time with
    ``clients_per_round`` sampled (target <= 1.2; a C at or below it is all clients) and
    without sampling (linear in C: the clients ratio)."""
    by_clients = lambda part: sorted(part, key=lambda r: r["clients"])   # noqa: E731
    curves = {"sampled": by_clients(r for r in rows
                                    if r["clients_per_round"] == min(clients_per_round,
                                                                     r["clients"])),
              "all_clients": by_clients(r for r in rows if r["clients_per_round"] == r["clients"])}
    summary = {}
    for label, part in curves.items():
        if len(part) >= 2:
            summary[f"{label}_round_ratio"] = part[-1]["round_s"] / part[0]["round_s"]
            summary[f"{label}_clients_ratio"] = part[-1]["clients"] / part[0]["clients"]
            summary[f"{label}_clients"] = [r["clients"] for r in part]
    return summary


TABLE_COLUMNS = ["clients", "clients_per_actor", "clients_per_round", "local_steps", "round_s",
                 "compute_s", "health_s", "exchange_s", "aggregation_s", "waiting_s",
                 "busiest_host_clients", "received_mb_per_client", "sent_mb_per_client",
                 "memory_mb_per_client", "ready_s"]


def scale_markdown(rows: list[dict], summary: dict, command: str, machine: str) -> str:
    """The rows as a markdown table under the command and machine, then the ratios."""
    lines = ["# Scale: pre-training rounds with many logical clients\n",
             f"Made by `{command}` on {machine}.\n",
             "| " + " | ".join(TABLE_COLUMNS) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[c]:.3g}" if isinstance(row[c], float)
                                       else str(row[c]) for c in TABLE_COLUMNS) + " |")
    lines.append("")
    lines += [f"- {key}: {value:.3g}" if isinstance(value, float) else f"- {key}: {value}"
              for key, value in summary.items()]
    return "\n".join(lines) + "\n"


def plot_scale(rows: list[dict], path) -> None:
    """Round time against C (all clients vs sampled, with the split) and memory per client."""
    from matplotlib.figure import Figure
    import matplotlib.ticker

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    sampled = [r["clients_per_round"] for r in rows if r["clients_per_round"] < r["clients"]]
    per_round = min(sampled, default=0)   # a C at or below it is "all" and "sampled" alike
    curves = (("all clients", [r for r in rows if r["clients_per_round"] == r["clients"]]),
              (f"{per_round} sampled", [r for r in rows if r["clients_per_round"] < r["clients"]
                                        or (sampled and r["clients"] <= per_round)]))
    for label, part in curves:
        part = sorted(part, key=lambda r: r["clients"])
        if not part:
            continue
        xs = [r["clients"] for r in part]
        left.plot(xs, [r["round_s"] for r in part], "o-", label=f"round, {label}")
        left.plot(xs, [r["compute_s"] for r in part], "x--", label=f"compute, {label}")
        right.plot(xs, [r["memory_mb_per_client"] for r in part], "o-", label=label)
    left.set(xlabel="logical clients C", ylabel="seconds per pre-training round",
             xscale="log", yscale="log")
    right.set(xlabel="logical clients C", ylabel="MB per logical client (host peaks / C)",
              xscale="log")
    ticks = sorted({r["clients"] for r in rows})
    for ax in (left, right):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())   # C's own ticks only
        ax.set_xticks(ticks, labels=ticks)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
