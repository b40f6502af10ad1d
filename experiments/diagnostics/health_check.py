"""Representation health of one pre-training method on one client (plain PyTorch, no Ray).

Site 0 of the synthetic phantom, the given config plus --set-style overrides; prints the
health figures (fcl_ray/methods/health.py) every ``--every`` steps. Used for the collapse ablation of
issue 10 (see experiments/results/README.md).

    .venv/bin/python experiments/diagnostics/health_check.py fcl --steps 150
    .venv/bin/python experiments/diagnostics/health_check.py fcl --steps 150 \
        --set pretrain.fresh_negatives=none --set pretrain.views=shrink
"""
from __future__ import annotations

import argparse
import json

import torch

from fcl_ray.config_io import load_config
from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_site
from fcl_ray.methods import get_method_class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--volumes", type=int, default=6, help="volumes of the client")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    d = cfg.data
    vols = make_site(cfg.experiment.seed, 0, args.volumes, d.image_size,
                     (d.slices_min, d.slices_max))
    slices = volumes_to_slices([v.image for v in vols], [None] * len(vols), d.partitions)
    torch.manual_seed(cfg.experiment.seed)
    method = get_method_class(args.method)(cfg, slices, torch.Generator().manual_seed(0),
                                           torch.device("cpu"))
    fmt = lambda h: " ".join(f"{k}={v:.3f}" for k, v in h.items())  # noqa: E731
    if not args.json:
        print(f"{args.method} {' '.join(args.overrides)}\n  step 0: {fmt(method.health())}")
    done = 0
    while done < args.steps:
        n = min(args.every, args.steps - done)
        loss = method.train_round(n, None)["loss"]
        done += n
        if not args.json:
            print(f"  step {done}: loss={loss:.3f} {fmt(method.health())}")
    if args.json:
        print(json.dumps({"method": args.method, "overrides": args.overrides, "steps": done,
                          **method.health()}))


if __name__ == "__main__":
    main()
