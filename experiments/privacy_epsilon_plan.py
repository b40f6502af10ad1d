"""Epsilon per site that a study's feature exchange will spend, before running it.

Builds each site's pre-training pool exactly as a run does (``ClientSite.start_pretraining``,
no Ray, no training), reads the release a round makes (units in the pool, units drawn), and
composes ``pretrain.rounds`` of them with the same accountant a run uses
(``fcl_ray.privacy.accountant``, dp-accounting RDP). A run that loses no round reports the
same figures in ``privacy.json``.

    .venv/bin/python experiments/privacy_epsilon_plan.py experiments/benchmark_v2.yaml \
        --multipliers 1,2,4,8 --fold 0
"""
from __future__ import annotations

import argparse
import sys

from fcl_ray.config import ConfigError
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.federation.site import ClientSite
from fcl_ray.privacy.accountant import RoundRelease, epsilon

METHOD = "fcl"   # the exchange's release does not depend on which sharing method builds it


def site_releases(cfg, fold: int) -> list[RoundRelease]:
    """The release one round of each site makes (pool sizes from the data, as in a run)."""
    cfg_dict = to_dict(cfg)
    releases = []
    for client in range(cfg.data.clients):
        info = ClientSite(cfg_dict, client, 1).start_pretraining(METHOD, fold)
        releases.append(RoundRelease(**info["privacy"]))
    return releases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--multipliers", default="1,2,4,8",
                        help="privacy.feature_noise_multiplier values, comma separated")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        multipliers = [float(z) for z in args.multipliers.split(",")]
        print("| noise multiplier | rounds | delta | unit | drawn / pool per site | epsilon per site |")
        print("|---|---|---|---|---|---|")
        for z in multipliers:
            cfg = load_config(args.config, [*args.set, f"privacy.feature_noise_multiplier={z}",
                                            "tracking.enabled=false"])
            releases = site_releases(cfg, args.fold)
            rounds, delta = cfg.pretrain.rounds, cfg.privacy.delta
            eps = [epsilon({r: rounds}, delta) for r in releases]
            print(f"| {z:g} | {rounds} | {delta:g} | {cfg.privacy.unit} | "
                  f"{' '.join(f'{r.sampled}/{r.population}' for r in releases)} | "
                  f"{' / '.join(f'{e:.2f}' for e in eps)} |")
    except (ConfigError, ValueError) as err:
        print(f"privacy_epsilon_plan: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
