"""Frozen-encoder probes in a run (``probes.enabled``): which encoders, one call per encoder.

The clients embed their own slices and run the segmentation probe on their own data
(:meth:`~fcl_ray.federation.coordinator.Coordinator.probe_encoder`); the cross-site probes of
:mod:`fcl_ray.methods.probes` run here, on the features the coordinator gathered. A client's
rows are the probes of the encoder it fine-tunes from, scored on its own held-out slices.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from fcl_ray.config import RANDOM_INIT, probe_methods
from fcl_ray.core import metrics as names
from fcl_ray.federation.cluster import await_coordinator
from fcl_ray.methods.probes import PROBES, SEGMENTATION_DICE, SiteFeatures, cross_site_probes


def probe_targets(cfg, methods: list[str], given: Optional[str] = None) -> list[str]:
    """The encoders this run probes: those of :func:`~fcl_ray.config.probe_methods` that it
    produces (random init always; a pre-training method only when it is pre-trained, so not
    beside ``finetune.encoder``), and the given encoder's label when ``probes.methods`` is
    [] (every encoder)."""
    targets = [m for m in probe_methods(cfg) if m == RANDOM_INIT or m in methods]
    if given is not None and not cfg.probes.methods:
        targets.append(given)
    return targets


def probe_encoder(cfg, coordinator, method: str, fold: int) -> list[dict]:
    """Every probe of ``method``'s encoder(s) in ``fold``: one row per client and probe."""
    pr = cfg.probes
    answer = await_coordinator(coordinator.probe_encoder.remote(method, fold, pr.n_labeled,
                                                                pr.steps),
                               f"probing {method} (fold {fold})", cfg)
    sites = [[SiteFeatures.from_arrays(arrays) for arrays in per_client]
             for per_client in answer["features"]]
    rows = []
    for client, encoder in enumerate(answer["encoder_of"]):
        values = cross_site_probes(sites[encoder], client, cfg.data.partitions)
        values[SEGMENTATION_DICE] = answer["segmentation"][client]
        rows += [{"method": method, "fold": fold, "client": client, "probe": probe,
                  "value": values[probe]} for probe in PROBES]
    return rows


def log_probes(rows: list[dict], method: str, fold: int, tracker,
               log: Callable[[str], None]) -> dict[str, float]:
    """One progress line and the MLflow metrics ``probe/<method>/<probe>`` (mean over
    clients, step = fold); returns those means."""
    means = {probe: float(np.mean([r["value"] for r in rows if r["probe"] == probe]))
             for probe in PROBES}
    log(f"[{method}] probes fold {fold} (mean over clients): "
        + ", ".join(f"{probe} {value:.3f}" for probe, value in means.items()))
    tracker.log_metrics({names.probe(method, probe): v for probe, v in means.items()}, step=fold)
    return means
