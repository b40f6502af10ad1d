"""Keep a client actor's process lean: imported first by :mod:`fcl_ray.federation.site`.

MONAI's ``import monai`` loads every MONAI submodule, and those pull in whatever optional
packages are installed: MLflow, pandas, matplotlib, SciPy's signal and stats. A client actor
uses none of them (it trains, evaluates and sends numbers back), yet importing them cost each
actor ~2 s of CPU and ~160 MB of resident memory (measured in benchmarks/README.md).

:func:`create_federation <fcl_ray.federation.cluster.create_federation>` starts the client
actors with ``FCL_RAY_ACTOR_BLOCK=<comma-separated modules>`` in their environment; in such a
process this module marks those modules as unavailable (``sys.modules[name] = None``), so
MONAI's ``optional_import`` skips them exactly as if they were not installed. Nothing else
changes: in the driver, the tests or a Tune trial the variable is unset and nothing is
blocked. A module already imported is never blocked.
"""
from __future__ import annotations

import os
import sys
import time

IMPORT_START = time.perf_counter()   # the actor's module imports start here (site.py)

BLOCK_VARIABLE = "FCL_RAY_ACTOR_BLOCK"
# What a client actor never needs. SciPy itself stays: the phantom blurs with scipy.ndimage.
NOT_IN_ACTORS = ("mlflow", "matplotlib", "pandas", "scipy.signal", "scipy.stats")


def blocked_modules() -> list[str]:
    return [m for m in os.environ.get(BLOCK_VARIABLE, "").split(",") if m]


for _name in blocked_modules():
    if _name not in sys.modules:
        sys.modules[_name] = None   # `import <name>` now raises ImportError at once
