"""The Flower runtime: the same FCL study on real sites that can only dial out.

A SuperNode at each site runs :mod:`fcl_ray.flower.client_app` around the site's own
:class:`~fcl_ray.federation.site.ClientSite`; the SuperLink at the coordinator's host runs
:mod:`fcl_ray.flower.server_app`, which drives the rounds with the Ray runtime's Ray-free
policy (:mod:`fcl_ray.core.strategy`). ``fcl-ray deploy`` writes what each party runs
(:mod:`fcl_ray.flower.deploy`); docs/deploy-flower.md walks a consortium through it.

Flower is an optional extra (``pip install 'fcl-ray[flower]'``): nothing outside this
package imports it, and :func:`require_flower` turns its absence into one line (exit 2).
"""
from __future__ import annotations

from fcl_ray.config import ConfigError

EXTRA_HINT = "pip install 'fcl-ray[flower]'"


def require_flower(what: str = "the Flower runtime") -> None:
    """Raise :class:`ConfigError` (one line, exit 2) when ``flwr`` is not installed."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs Flower, which is not installed: "
                          f"{EXTRA_HINT}") from None
