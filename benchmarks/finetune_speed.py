"""Fine-tuning step rate of the platform's trainer against a plain PyTorch loop (issue 20).

Both train the same MONAI BasicUNet (Adam, Dice-CE, the same batch size and torch threads)
in this one process, alternating A B A B so drift hits both; the plain loop has no
augmentation, no scheduler and no bookkeeping: it is the floor. Also timed: one
early-stopping evaluation (validation patients' volumes, batched under inference_mode) in
units of training steps, i.e. what ``finetune.eval_every`` costs.

    python benchmarks/finetune_speed.py --sizes 48,32 --out benchmarks/finetune_speed.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from monai.losses import DiceCELoss

from fcl_ray.data.slices import SliceSet
from fcl_ray.methods.evaluate import mean_dice
from fcl_ray.methods.finetune import SegmentationTrainer, init_unet


def _slices(n: int, size: int, gen: torch.Generator) -> SliceSet:
    labels = torch.randint(0, 4, (n, size, size), generator=gen)
    return SliceSet(torch.rand(n, 1, size, size, generator=gen), labels,
                    torch.zeros(n, dtype=torch.long), torch.arange(n) // 10, torch.zeros(n))


def plain_loop(features, data: SliceSet, batch: int, steps: int) -> float:
    """Steps/s of the floor: sample, forward, Dice-CE, backward, Adam step."""
    unet = init_unet(features, None, 0, torch.device("cpu"))
    optimizer = torch.optim.Adam(unet.parameters(), 1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    gen = torch.Generator().manual_seed(0)
    unet.train()

    def run(k):
        for _ in range(k):
            idx = torch.randint(len(data), (batch,), generator=gen)
            loss = loss_fn(unet(data.images[idx]), data.labels[idx][:, None])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    run(5)   # warm-up
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def platform_trainer(features, data: SliceSet, batch: int, steps: int) -> float:
    """Steps/s of SegmentationTrainer (augmentation, cosine schedule, loss bookkeeping)."""
    unet = init_unet(features, None, 0, torch.device("cpu"))
    trainer = SegmentationTrainer(unet, data, batch, 1e-3, torch.Generator().manual_seed(0),
                                  cosine_steps=10 * steps)
    trainer.train(5)
    start = time.perf_counter()
    trainer.train(steps)
    return steps / (time.perf_counter() - start)


def evaluation_seconds(features, validation: SliceSet, repeats: int = 5) -> float:
    unet = init_unet(features, None, 0, torch.device("cpu"))
    mean_dice(unet, validation)
    start = time.perf_counter()
    for _ in range(repeats):
        mean_dice(unet, validation)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="48", help="image sizes, comma-separated")
    parser.add_argument("--features", default="16,32,64,128,128,16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--validation-volumes", type=int, default=4,
                        help="volumes scored per evaluation (2 patients x ED, ES)")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features = [int(f) for f in args.features.split(",")]
    figures = []
    for size in [int(s) for s in args.sizes.split(",")]:
        gen = torch.Generator().manual_seed(size)
        train, validation = _slices(40, size, gen), _slices(10 * args.validation_volumes, size, gen)
        rates = {"plain": [], "platform": []}
        for _ in range(2):   # A B A B
            rates["plain"].append(plain_loop(features, train, args.batch, args.steps))
            rates["platform"].append(platform_trainer(features, train, args.batch, args.steps))
        plain, ours = max(rates["plain"]), max(rates["platform"])
        evaluation = evaluation_seconds(features, validation)
        row = {"image_size": size, "features": features, "batch": args.batch,
               "threads": args.threads, "plain_steps_per_s": round(plain, 2),
               "platform_steps_per_s": round(ours, 2), "ratio": round(ours / plain, 3),
               "evaluation_s": round(evaluation, 4),
               "evaluation_in_steps": round(evaluation * ours, 2),
               "runs": {k: [round(v, 2) for v in vs] for k, vs in rates.items()}}
        figures.append(row)
        print(f"{size} px, widths {args.features}, batch {args.batch}, {args.threads} thread(s): "
              f"plain {plain:.2f} steps/s, platform {ours:.2f} steps/s (ratio {ours / plain:.3f}); "
              f"one evaluation of {args.validation_volumes} volumes = {evaluation * 1e3:.0f} ms "
              f"= {evaluation * ours:.2f} steps", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(figures, handle, indent=1)


if __name__ == "__main__":
    main()
