"""Resident memory of this process, for ``fcl-ray bench`` (client actors and the coordinator).
Standard library only, so the coordinator can use it without torch."""
from __future__ import annotations

import resource


def resident_mb() -> float:
    """Resident memory of this process now (MB), from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


def peak_resident_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
