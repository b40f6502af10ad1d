"""Differential privacy of the feature exchange (issue 32).

- :mod:`fcl_ray.privacy.accountant`: what one round's release costs and its composition over
  rounds (Google's ``dp-accounting``, the optional extra ``fcl-ray[privacy]``). No torch, no Ray.
- :mod:`fcl_ray.privacy.mechanism`: which rows a site shares and the Gaussian noise on them,
  applied at the site before anything leaves. Torch, no Ray.
- :mod:`fcl_ray.privacy.audit`: the honest-but-curious coordinator's attack, as a measurement
  (``fcl-ray privacy-audit``). Torch + MONAI, no Ray.

docs/privacy.md says what the guarantee is, and what it is not.
"""
from __future__ import annotations

from fcl_ray.config import ConfigError

EXTRA_HINT = "pip install 'fcl-ray[privacy]' (the dp-accounting library)"


def require_accounting(key: str) -> None:
    """Raise a one-line ConfigError naming ``key`` when dp-accounting is not installed."""
    try:
        import dp_accounting  # noqa: F401
    except ImportError:
        raise ConfigError(f"config key '{key}': the privacy accountant is an optional extra "
                          f"that is not installed; {EXTRA_HINT}") from None
