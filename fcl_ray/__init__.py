"""fcl-ray: federated contrastive learning (Wu et al., MICCAI 2021) for volumetric medical
image segmentation, on Ray.

From Python (a notebook, a script), the same work as the ``fcl-ray`` command::

    import fcl_ray

    results = fcl_ray.run("experiments/quickstart.yaml", ["pretrain.rounds=3"])
    results.table                       # the rows of results.csv (a pandas DataFrame)
    fcl_ray.report(results).tables      # the paper's tables, as `fcl-ray report` prints them

Bad input raises :class:`FclRayError` with the command line's one-line message.
Importing the package loads neither Ray, torch nor MLflow: each function loads what it needs.
"""
import logging
import sys
import types

from fcl_ray.api import Report, RunResults, report, run, sweep
from fcl_ray.errors import FclRayError, RunInterrupted

__all__ = ["FclRayError", "Report", "RunInterrupted", "RunResults", "__version__", "report",
           "run", "sweep"]

# A library's logging: no output unless the program asks for it (fcl_ray/log.py).
logging.getLogger(__name__).addHandler(logging.NullHandler())


class _Package(types.ModuleType):
    """``fcl_ray.report`` and ``fcl_ray.sweep`` stay the API's functions after the modules of
    the same names are imported (the import system would set the package's attribute to
    the module). Those modules are reached by their full names, as the code does:
    ``from fcl_ray.report import render_report``, ``from fcl_ray.sweep.run import ...``."""

    def __setattr__(self, name: str, value) -> None:
        if name in ("report", "sweep") and isinstance(value, types.ModuleType):
            return   # the module stays in sys.modules
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    """``fcl_ray.__version__``, read from the installed package's metadata on first use (not
    at import: every Ray actor imports the package)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("fcl-ray")
        except PackageNotFoundError:   # a source checkout that was never installed
            value = "0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'fcl_ray' has no attribute '{name}'")
