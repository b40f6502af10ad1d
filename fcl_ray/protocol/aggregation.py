"""FedAvg as a pure function of (weight vector, sample count) pairs. NumPy only.

Weights travel as one flat float32 vector per client (:mod:`fcl_ray.protocol.weights` builds
it from the networks), so averaging is one vectorised operation per client. No torch here:
the coordinator, which only averages, never imports it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def fedavg(vectors: Sequence[np.ndarray], n_samples: Sequence[float],
           out: Optional[np.ndarray] = None) -> np.ndarray:
    """Average of the clients' weight vectors, weighted by their number of samples.

    The order of ``vectors`` must be fixed (by client id), never by arrival, so the floating
    point sum and hence the result are reproducible. The sum is taken in float64 in one
    preallocated buffer (no temporary per client); ``out`` (float32, e.g. the previous global
    vector when nothing else holds it) receives the result without a new allocation.
    """
    if not vectors:
        raise ValueError("fedavg needs at least one update")
    if len(vectors) != len(n_samples):
        raise ValueError("one sample count per update is needed")
    total = float(sum(n_samples))
    if total <= 0:
        raise ValueError("sample counts must add up to more than zero")
    total_sum = np.zeros(vectors[0].shape, dtype=np.float64)
    scaled = np.empty(vectors[0].shape, dtype=np.result_type(vectors[0], np.float32))
    for vec, n in zip(vectors, n_samples):
        np.multiply(vec, n / total, out=scaled)   # as (n / total) * vec, without a new array
        total_sum += scaled
    if out is None:
        return total_sum.astype(np.float32)
    np.copyto(out, total_sum, casting="same_kind")
    return out
