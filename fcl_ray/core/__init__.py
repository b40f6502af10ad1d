"""The federation core, free of any runtime: what a round is, whatever moves the messages.

- :mod:`~fcl_ray.core.strategy`: the :class:`Strategy` that owns a round in both phases
  (configure it, aggregate the updates and the feature pool, stop fine-tuning early); FedAvg
  is the default, :class:`FedProx` a subclass.
- :mod:`~fcl_ray.core.participation`: which clients a round samples (seeded, checkpointed).
- :mod:`~fcl_ray.core.early_stopping`: when fine-tuning stops (federated and local).
- :mod:`~fcl_ray.core.events`: typed round reports and progress events (no dicts by key).
- :mod:`~fcl_ray.core.metrics`: every metric name the platform logs.

A runtime (Ray today: :mod:`fcl_ray.federation`) moves messages, keeps state between rounds
and writes checkpoints; every decision about the messages is made here. Nothing in this
package imports Ray, Flower, MLflow, torch or :mod:`fcl_ray.federation`
(tests/unit/test_architecture.py), and this ``__init__`` imports nothing.
"""
