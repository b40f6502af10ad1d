"""Learning curve of one client's fine-tune, without early stopping (issue 20's calibration).

Trains one client's U-Net (random init) on N labeled patients, or every labelable patient for
the upper bound, for ``--steps`` steps and prints its validation and test Dice every
``--every`` steps: where the curve flattens says what ``finetune.max_steps`` and the cosine
horizon should be, and how noisy the early-stopping score is. One process, one torch thread.

    python benchmarks/finetune_curve.py --client 2 --n-labeled all --lr 1e-3 --horizon 1500
    python benchmarks/finetune_curve.py --client 0 --set data.noise=0.6 --steps 800 --horizon 800
"""
from __future__ import annotations

import argparse
import json
import time

from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite
from fcl_ray.methods.evaluate import mean_dice
from fcl_ray.protocol.messages import ALL_LABELED


def learning_curve(site: ClientSite, fold: int, n_labeled: int, horizon: int, steps: int,
                   every: int) -> list[dict]:
    """(step, mean training loss, validation Dice, test Dice) every ``every`` steps."""
    trainer = site._new_trainer(None, fold, n_labeled, total_steps=horizon)
    validation = site._validation_slices(fold)
    test = site.slices.select_volumes(site._split(fold).test)
    curve, done = [], 0
    while done < steps:
        loss = trainer.train(every)
        done += every
        curve.append({"step": done, "loss": round(loss, 3),
                      "val_dice": round(mean_dice(trainer.unet, validation), 3),
                      "test_dice": round(mean_dice(trainer.unet, test), 3)})
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/synthetic_benchmark.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="a config override, as in fcl-ray run (repeatable)")
    parser.add_argument("--client", type=int, default=0)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-labeled", default="all", help="patients labeled, or 'all' (upper bound)")
    parser.add_argument("--lr", type=float, help="fine-tuning rate (default: the config's)")
    parser.add_argument("--horizon", type=int, default=1500, help="cosine decay length (0: constant)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    args = parser.parse_args()

    overrides = list(args.overrides) + ([f"finetune.lr={args.lr}"] if args.lr else [])
    cfg = load_config(args.config, overrides)
    cfg.finetune.budget = "converge"     # so the validation patients are held out
    site = ClientSite(to_dict(cfg), args.client, num_threads=1)
    n_labeled = ALL_LABELED if args.n_labeled == "all" else int(args.n_labeled)
    start = time.perf_counter()
    curve = learning_curve(site, args.fold, n_labeled, args.horizon, args.steps, args.every)
    print(json.dumps({"client": args.client, "fold": args.fold, "n_labeled": args.n_labeled,
                      "lr": cfg.finetune.lr, "horizon": args.horizon, "overrides": args.overrides,
                      "seconds": round(time.perf_counter() - start, 1), "curve": curve}))


if __name__ == "__main__":
    main()
