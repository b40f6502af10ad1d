"""The wire protocol between a site and the coordinator, the same under every runtime.

- :mod:`~fcl_ray.protocol.messages`: what a site may send (:class:`ClientUpdate`) and the
  contract every update is checked against, at the site before sending and on arrival.
- :mod:`~fcl_ray.protocol.aggregation`: FedAvg over flat weight vectors (NumPy only).
- :mod:`~fcl_ray.protocol.weights`: a network's weights as that flat vector (torch; only the
  sites import it).

Nothing here imports Ray, Flower, MLflow or :mod:`fcl_ray.federation`
(tests/unit/test_architecture.py), and this ``__init__`` imports nothing, so the coordinator
can read the messages without paying for torch.
"""
