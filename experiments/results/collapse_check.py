"""Does a pre-training method collapse its embeddings? (The check behind README.md's reading.)

One client (site 0, 9 volumes of the benchmark's phantom), the benchmark's config plus any
--set-style overrides given as arguments; prints, before and after training, the mean pairwise
cosine of the embeddings (1.000 = every slice maps to one point), the partition gap (mean
same-partition minus cross-partition cosine) and the spread of the encoder's pooled features.

    .venv/bin/python experiments/results/collapse_check.py fcl 80
    .venv/bin/python experiments/results/collapse_check.py fcl 80 pretrain.lr=0.0001
"""
import sys

import torch

from fcl_ray.config import load_config
from fcl_ray.data.slices import volumes_to_slices
from fcl_ray.data.synthetic import make_site
from fcl_ray.methods import get_method_class


def stats(net, sl) -> str:
    with torch.no_grad():
        pooled = net.head.pool(net.encoder(sl.images)).flatten(1)
        z = net(sl.images)
    off = ~torch.eye(len(z), dtype=torch.bool)
    sim = z @ z.T
    same = sl.partition[:, None] == sl.partition[None, :]
    return (f"cos={sim[off].mean():.3f} gap={sim[same & off].mean() - sim[~same].mean():.3f} "
            f"feat_std={pooled.std(0).mean():.3f}")


def main(name: str, steps: str = "80", *overrides: str) -> None:
    torch.set_num_threads(2)
    cfg = load_config("experiments/synthetic_benchmark.yaml", list(overrides))
    vols = make_site(cfg.experiment.seed, 0, 9, cfg.data.image_size,
                     (cfg.data.slices_min, cfg.data.slices_max))
    sl = volumes_to_slices([v.image for v in vols], [None] * len(vols), cfg.data.partitions)
    torch.manual_seed(0)
    method = get_method_class(name)(cfg, sl, torch.Generator().manual_seed(0),
                                    torch.device("cpu"))
    print(f"{name} {' '.join(overrides)} init: {stats(method.net, sl)}")
    loss = method.train_round(int(steps), None)["loss"]
    print(f"{name} {' '.join(overrides)} after {steps} steps: loss={loss:.2f} {stats(method.net, sl)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
