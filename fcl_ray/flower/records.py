"""FCL's messages as Flower records, and the message contract checked at the site.

A round's payloads travel as typed records of a :class:`flwr.app.RecordDict`:

- ``task`` (ConfigRecord): what the site is asked to do (kind, method, fold, round, N);
- ``config`` (ConfigRecord): a round's scalars from the strategy
  (:meth:`~fcl_ray.core.strategy.Strategy.configure_round`: FedProx's ``proximal_mu``; absent
  for FedAvg), given to the site's round as the Ray coordinator gives it;
- ``weights`` (ArrayRecord): the flat weight vector, one float32 array;
- ``pool`` (ArrayRecord): the shared features of the last round, ``features.<site>`` (n, d)
  float32 and ``partitions.<site>`` (n,) integer labels, one pair per site;
- ``update`` (ConfigRecord) + ``weights`` + ``shared`` (ArrayRecord with ``features`` and
  ``partitions``) + ``metrics`` (MetricRecord): a site's answer to a round;
- ``result`` (ConfigRecord): scalars only (an evaluation's Dice, a phase's sizes; a
  pre-training set-up's privacy release flattened to ``privacy.<field>``,
  :func:`release_scalars`).

:func:`fcl_ray.flower.site_runner.checked_update` runs
:func:`fcl_ray.protocol.messages.check_update` at the site, before the reply is built: an
update that breaks the contract (an image-sized array, a wrong shape, NaN) never leaves the
site. The coordinator checks again on arrival.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fcl_ray.core.strategy import SharedFeatures
from fcl_ray.protocol.messages import ClientUpdate, MessageError

REFUSED = 1001   # Error code of a reply the site refused to send (contract, node config)
TASK, CONFIG, WEIGHTS, POOL, UPDATE, SHARED, METRICS, RESULT = (
    "task", "config", "weights", "pool", "update", "shared", "metrics", "result")
PRIVACY = "privacy."   # prefix of a set-up result's privacy release fields


def round_config_from(content: RecordDict) -> dict:
    """The round's config a message carries ({} when none: FedAvg)."""
    record = content.config_records.get(CONFIG)
    return {} if record is None else dict(record)


def release_scalars(info: dict) -> dict:
    """A set-up's info with its ``privacy`` release (a dict, or None) as scalars
    ``privacy.<field>`` (a result record holds scalars only)."""
    release = info.get("privacy") or {}
    return {**{k: v for k, v in info.items() if k != "privacy"},
            **{PRIVACY + k: v for k, v in release.items()}}


def release_of(result: dict) -> Optional[dict]:
    """The privacy release a set-up's result carries (:func:`release_scalars` undone), or
    None when the site releases nothing accounted."""
    release = {k[len(PRIVACY):]: v for k, v in result.items() if k.startswith(PRIVACY)}
    return release or None


def weights_record(weights: np.ndarray) -> ArrayRecord:
    return ArrayRecord({"weights": Array(np.ascontiguousarray(weights))})


def weights_from(content: RecordDict) -> Optional[np.ndarray]:
    """The weight vector of a message, or None when it carries none."""
    if WEIGHTS not in content.array_records:
        return None
    return content.array_records[WEIGHTS]["weights"].numpy()


def pool_record(pool: SharedFeatures) -> ArrayRecord:
    arrays = {}
    for site, (features, partitions) in sorted(pool.items()):
        arrays[f"features.{site}"] = Array(np.ascontiguousarray(features))
        arrays[f"partitions.{site}"] = Array(np.ascontiguousarray(partitions))
    return ArrayRecord(arrays)


def pool_from(content: RecordDict) -> Optional[SharedFeatures]:
    """The feature pool of a message (None when empty), by site id."""
    if POOL not in content.array_records:
        return None
    record = content.array_records[POOL]
    sites = sorted(int(key.split(".", 1)[1]) for key in record if key.startswith("features."))
    return {s: (record[f"features.{s}"].numpy(), record[f"partitions.{s}"].numpy())
            for s in sites} or None


def update_records(update: ClientUpdate) -> RecordDict:
    """A site's (checked) update as records."""
    content = RecordDict({
        UPDATE: ConfigRecord({"client": update.client, "n_samples": update.n_samples}),
        WEIGHTS: weights_record(update.weights),
        METRICS: MetricRecord({k: float(v) for k, v in update.metrics.items()})})
    if update.features is not None:
        content[SHARED] = ArrayRecord({"features": Array(update.features),
                                       "partitions": Array(update.partitions)})
    return content


def update_from(content: RecordDict) -> ClientUpdate:
    """The :class:`ClientUpdate` a reply carries (checked by the coordinator's strategy)."""
    head = content.config_records[UPDATE]
    shared = content.array_records.get(SHARED)
    return ClientUpdate(client=int(head["client"]), weights=weights_from(content),
                        n_samples=int(head["n_samples"]),
                        features=None if shared is None else shared["features"].numpy(),
                        partitions=None if shared is None else shared["partitions"].numpy(),
                        metrics=dict(content.metric_records[METRICS]))


def scalars_record(values: Mapping) -> ConfigRecord:
    """Scalars (numbers, strings, booleans, None dropped) as a record; anything else is
    refused at the site (a result must not smuggle an array out)."""
    record = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, (bool, int, float, str)):
            raise MessageError(f"refused at the site before sending: result {key!r} is a "
                               f"{type(value).__name__}, not a scalar")
        record[key] = value
    return ConfigRecord(record)
