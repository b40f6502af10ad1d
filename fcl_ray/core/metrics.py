"""Every metric name the platform writes (MLflow runs, Ray Tune reports), in one place.

Dashboards, sweeps and plots read these names back, so a name is made only here:

- ``<method>/<key>``: a pre-training round's figure (step ``fold * rounds + round``), e.g.
  ``fcl/loss``, ``fcl/probe_dice``; ``<method>/<key>_client<c>``: one client's.
- ``health/<key>``: a representation-health figure (``<method>/health/<key>`` once logged).
- ``<metric>/<method>/<mode>/N<n>``: a fine-tuning setting's mean, e.g.
  ``dice_mean/fcl/local/N1``, ``steps/...``, ``val_dice/...``.
- ``dice/<method>/<mode>/N<n>/client<c>``: one client's Dice of a setting (mean over folds).
- ``probe/<method>/<probe>``: a frozen-encoder probe's mean (step: the fold).
"""
from __future__ import annotations

HEALTH_PREFIX = "health/"
PRIVACY_EPSILON = "privacy/epsilon"   # per client: <method>/privacy/epsilon_client<c>


def health(key: str) -> str:
    """``health/<key>``: how a client's round metrics name a health figure."""
    return f"{HEALTH_PREFIX}{key}"


def health_of(metrics: dict) -> dict[str, float]:
    """The health figures among ``metrics`` by their short key: {'mean_cosine': .., ...}."""
    return {k[len(HEALTH_PREFIX):]: v for k, v in metrics.items() if k.startswith(HEALTH_PREFIX)}


def of_method(method: str, key: str) -> str:
    """``<method>/<key>``: a pre-training figure of ``method`` (or the control's)."""
    return f"{method}/{key}"


def of_client(method: str, key: str, client) -> str:
    """``<method>/<key>_client<c>``: one client's figure."""
    return f"{method}/{key}_client{client}"


def setting(metric: str, method: str, mode: str, n_labeled) -> str:
    """``<metric>/<method>/<mode>/N<n>``: a fine-tuning setting's figure."""
    return f"{metric}/{method}/{mode}/N{n_labeled}"


def client_dice(method: str, mode: str, n_labeled, client) -> str:
    """``dice/<method>/<mode>/N<n>/client<c>``."""
    return f"dice/{method}/{mode}/N{n_labeled}/client{client}"


def probe(method: str, name: str) -> str:
    """``probe/<method>/<probe>``."""
    return f"probe/{method}/{name}"
