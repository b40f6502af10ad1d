"""Many simulated clients on one machine (federation.clients_per_actor): round time, first
round and memory of the federation alone (no plain-PyTorch reference: 64 clients in one
process would be the memory problem this option avoids).

    PYTHONPATH=. python benchmarks/many_clients.py --clients 16,64 --per-actor 4,16 --steps 2
"""
from __future__ import annotations

import argparse
import json
import time

from fcl_ray.config_io import load_config
from fcl_ray.federation.bench import DEFAULT_WORKLOAD, federation_seconds
from fcl_ray.federation.cluster import connect_ray


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--per-actor", default="4,16")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the figures")
    args = parser.parse_args()
    rows = []
    for n, k in zip(map(int, args.clients.split(",")), map(int, args.per_actor.split(","))):
        cfg = load_config(None, DEFAULT_WORKLOAD + [
            f"data.clients={n}", f"federation.clients_per_actor={k}",
            f"pretrain.local_steps={args.steps}", f"finetune.local_steps={args.steps}"])
        connect_ray(cfg)
        fed = federation_seconds(cfg, args.rounds, time.perf_counter())
        actors = {b["pid"]: b for b in fed.pop("actors")}.values()
        row = {"clients": n, "clients_per_actor": k, "local_steps": args.steps, **fed,
               "actor_peak_mb": [round(b["peak_rss_mb"]) for b in actors],
               "actors_total_rss_mb": round(sum(b["rss_now_mb"] for b in actors))}
        rows.append(row)
        print(f"C={n} in {fed['client_actors']} actors ({k} per actor), {args.steps} steps: "
              f"pre-train round {fed['pretrain_round_s']:.2f}s, fine-tune round "
              f"{fed['finetune_round_s']:.2f}s, first round {fed['time_to_first_round_s']:.1f}s "
              f"after creation, peak per actor {row['actor_peak_mb']} MB, all client actors "
              f"{row['actors_total_rss_mb']} MB resident", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1, default=float)


if __name__ == "__main__":
    main()
