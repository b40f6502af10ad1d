"""GPU check, run on one GPU: client actors pinned to fractions of it vs one plain process.

    python benchmarks/gpu_bench.py [--out DIR] [--quick]

Measures, for FCL pre-training and federated fine-tuning on one GPU:
  * 4 client actors at num_gpus=0.25 each (Ray) vs one plain PyTorch process doing the same
    total steps on the same GPU: slices/s of both and their ratio (target >= 0.9);
  * the plain process in fp32, bf16 autocast, and bf16 + channels-last;
  * that each client actor got a GPU from Ray (ray.get_gpu_ids) and trains on it.
Writes gpu_bench.json and prints a table. Needs torch with CUDA, Ray and MONAI.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402

from fcl_ray.config_io import load_config  # noqa: E402
from fcl_ray.federation.bench import DEFAULT_WORKLOAD, federation_seconds, reference_seconds  # noqa: E402
from fcl_ray.federation.cluster import create_federation  # noqa: E402


def workload(args, amp="fp32", channels_last=False, gpus=0.25):
    size = 32 if args.quick else args.image_size
    return load_config(None, DEFAULT_WORKLOAD + [
        f"data.clients={args.clients}", f"data.image_size={size}",
        f"pretrain.local_steps={args.steps}", f"finetune.local_steps={args.steps}",
        f"pretrain.volumes_per_batch={args.volumes}", f"finetune.batch_size={args.volumes * 4}",
        f"federation.num_gpus_per_client={gpus}",
        f"federation.num_cpus_per_client={args.cpus_per_client}",
        f"model.amp={amp}", f"model.channels_last={str(channels_last).lower()}"])


def slices_per_round(cfg, pretrain=True) -> int:
    """Slices pushed through the network per round by all clients (2 views in FCL)."""
    if pretrain:
        return cfg.data.clients * cfg.pretrain.local_steps * cfg.pretrain.volumes_per_batch \
            * cfg.data.partitions * 2
    return cfg.data.clients * cfg.finetune.local_steps * cfg.finetune.batch_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--volumes", type=int, default=8, help="volumes per FCL batch (x4 slices)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run)")
    parser.add_argument("--cpus-per-client", type=float, default=2.0)
    parser.add_argument("--variants", default="fp32,bf16,bf16+cl",
                        help="precision variants to time: fp32, bf16, bf16+cl")
    args = parser.parse_args()
    has_gpu = torch.cuda.is_available()
    report = {"gpu": torch.cuda.get_device_name(0) if has_gpu else None,
              "torch": torch.__version__, "ray": ray.__version__, "args": vars(args)}
    ray.init(num_gpus=1 if has_gpu else 0, logging_level="ERROR", include_dashboard=False)
    gpus = 1.0 / args.clients if has_gpu else 0.0

    # 1. Pinning: every client actor holds a GPU id from Ray and trains on cuda.
    cfg = workload(args, gpus=gpus)
    clients, coordinator = create_federation(cfg)
    report["client_devices"] = ray.get([c.info.remote() for c in clients])
    report["client_gpu_ids"] = ray.get([c.__ray_call__.remote(lambda self: ray.get_gpu_ids())
                                        for c in clients])
    for actor in clients + [coordinator]:
        ray.kill(actor)

    # 2. Plain process vs federation, for fp32 / bf16 / bf16 + channels-last.
    rows = []
    for variant in args.variants.split(","):
        amp, cl = variant.split("+")[0], variant.endswith("+cl")
        cfg = workload(args, amp, cl, gpus)
        start = time.perf_counter()
        fed = federation_seconds(cfg, args.rounds, start)
        ref_pre, ref_ft = reference_seconds(cfg, args.rounds,
                                            threads=max(1, int(args.cpus_per_client)))
        row = {"amp": amp, "channels_last": cl,
               "fed_pretrain_slices_per_s": slices_per_round(cfg) / fed["pretrain_round_s"],
               "plain_pretrain_slices_per_s": slices_per_round(cfg) / ref_pre,
               "fed_finetune_slices_per_s": slices_per_round(cfg, False) / fed["finetune_round_s"],
               "plain_finetune_slices_per_s": slices_per_round(cfg, False) / ref_ft,
               "exchange_aggregate_fraction": fed["exchange_aggregate_fraction"],
               "bytes_per_round_mb": fed["bytes_per_round_mb"]}
        row["pretrain_ratio"] = row["fed_pretrain_slices_per_s"] / row["plain_pretrain_slices_per_s"]
        row["finetune_ratio"] = row["fed_finetune_slices_per_s"] / row["plain_finetune_slices_per_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    report["rows"] = rows
    if has_gpu:
        report["max_memory_allocated_gb_driver"] = torch.cuda.max_memory_allocated() / 2**30
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
