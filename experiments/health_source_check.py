"""Do the collapse guard's figures from the training steps (``pretrain.health_source=steps``)
read like the probe's? One small run per method and setting, in this process (2 clients that
swap features, weights kept local): every round, the steps' figures and the probe's on the
*same* networks (keeping the step's features changes no step, so both read one trajectory),
and the guard's verdict on each with the default thresholds.

Settings: ``healthy`` (the defaults), ``collapsing`` (the old head and loss at 50x the rate:
no BatchNorm, stale negatives only, lr 0.05, as tests/integration/test_collapse_guard.py) and
``collapsing_bn`` (the same with today's BatchNorm head, which batch statistics could hide).

Usage: PYTHONPATH=. python experiments/health_source_check.py [--rounds 6] [--out FILE.jsonl]
(about a minute on 2 CPU cores; experiments/results/health_source_check.jsonl is its output.)
"""
from __future__ import annotations

import argparse
import json

import torch

from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite
from fcl_ray.methods.bank import merge_remote
from fcl_ray.methods.health import is_collapsed

# A small phantom federation (2 clients) that a shared 2-core machine runs in minutes.
BASE = ["data.clients=2", "data.cases_per_client=6", "data.folds=3", "data.image_size=48",
        "data.partitions=4", "model.features=[8,16,32,64,64,8]", "model.projection_hidden=64",
        "model.projection_dim=32", "pretrain.local_steps=5", "pretrain.volumes_per_batch=4",
        "pretrain.health_source=steps", "tracking.enabled=false"]
SETTINGS = {
    "healthy": [],
    "collapsing": ["model.head_norm=none", "pretrain.fresh_negatives=none", "pretrain.lr=0.05"],
    "collapsing_bn": ["pretrain.fresh_negatives=none", "pretrain.lr=0.05"],
}
METHODS = ["fcl", "local_cl", "fedsimclr", "fedswav", "fedca"]
SHOWN = ("mean_cosine", "effective_rank", "live_units", "partition_gap")


def compare(method: str, setting: str, rounds: int) -> list[dict]:
    """One row per round: the steps' and the probe's figures and verdicts."""
    cfg = load_config(None, BASE + SETTINGS[setting] + [f"pretrain.methods=[{method}]",
                                                        f"pretrain.rounds={rounds}"])
    p = cfg.pretrain
    clients = [ClientSite(to_dict(cfg), c, 1, 0) for c in range(cfg.data.clients)]
    for c in clients:
        c.start_pretraining(method, 0)
    rows = []
    for r in range(1, rounds + 1):
        # Each client gets the other's features as in a federation (weights stay local).
        shared = {c.client_id: c.method.shared_features() for c in clients}
        for c in clients:
            remote = (merge_remote(shared, c.client_id, c.device, None, None)
                      if c.method.shares_features else None)
            c.method.start_round(r)
            c.method.train_round(p.local_steps, remote)
            steps, probe = c.method.health(), c.method.probe_health()
            rows.append({"method": method, "setting": setting, "round": r, "client": c.client_id,
                         **{f"steps_{k}": steps[k] for k in SHOWN},
                         **{f"probe_{k}": probe[k] for k in SHOWN},
                         **{f"{source}_collapsed": is_collapsed(figures, p.collapse_cosine,
                                                                 p.collapse_rank)
                            for source, figures in (("steps", steps), ("probe", probe))}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", default=None, help="also write the rows here (JSON lines)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = open(args.out, "w") if args.out else None
    for setting in args.settings.split(","):
        for method in args.methods.split(","):
            for row in compare(method, setting, args.rounds):
                print(f"{setting:13s} {method:9s} r{row['round']} c{row['client']}  " + "  ".join(
                    f"{k[:4]} {row['steps_' + k]:6.3f}/{row['probe_' + k]:6.3f}" for k in SHOWN)
                    + f"  collapsed {row['steps_collapsed']:d}/{row['probe_collapsed']:d}",
                    flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
