"""A SuperNode's node config (``--node-config "site=0 data-root=..."``), checked at the site.

Pure Python: what a site says about itself, and how the study's config is pointed at the
site's own data. A bad value is one line (:class:`SiteConfigError`): the site refuses to
take part rather than train on the wrong data.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from fcl_ray.config import ConfigError

NODE_KEYS = ("site", "data-root", "state-dir", "threads")


class SiteConfigError(ConfigError):
    """A SuperNode whose node config does not fit the study."""


@dataclass(frozen=True)
class SiteSettings:
    site: int          # the study's client id this SuperNode plays
    data_root: Path    # the site's own data (the folder must exist)
    state_dir: Path    # the site's own checkpoints: bank, optimiser, networks, encoders
    threads: int       # torch threads of the site's ClientApp


def site_settings(node_config: Mapping, clients: int) -> SiteSettings:
    """Check ``node_config`` against a study of ``clients`` sites; raise SiteConfigError."""
    unknown = sorted(set(node_config) - set(NODE_KEYS))
    if unknown:
        raise SiteConfigError(f"node config: unknown key(s) {unknown}; allowed: "
                              f"{', '.join(NODE_KEYS)}")
    site = node_config.get("site")
    if isinstance(site, bool) or not isinstance(site, int) or not 0 <= site < clients:
        raise SiteConfigError(f"node config: site={site!r} is not a site of this study "
                              f"(an integer in [0, {clients}))")
    root = node_config.get("data-root")
    if not isinstance(root, str) or not root:
        raise SiteConfigError(f"site {site}: node config needs data-root=\"<folder>\"")
    data_root = Path(root).expanduser()
    if not data_root.is_dir():
        raise SiteConfigError(f"site {site}: data-root '{data_root}' does not exist or is "
                              f"not a folder")
    threads = node_config.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SiteConfigError(f"site {site}: threads={threads!r}: expected an integer >= 1")
    state = node_config.get("state-dir")
    state_dir = Path(state).expanduser() if state else data_root / "fcl-ray-state"
    return SiteSettings(site, data_root, state_dir, threads)


def site_config(cfg_dict: dict, settings: SiteSettings) -> dict:
    """The study's config as this site runs it: a dataset on disk is read from the site's
    own data root (the phantom is drawn from the seed and needs none)."""
    cfg = copy.deepcopy(cfg_dict)
    data = cfg["data"]
    if data.get("kind", "synthetic") == "synthetic":
        return cfg
    # data.client_roots: one folder per site (check_flower_study refuses one shared root)
    roots = list(data["client_roots"])
    roots[settings.site] = str(settings.data_root)
    data["client_roots"] = roots
    return cfg
