"""``fcl-ray deploy``: what each party of a Flower deployment runs, written to one folder.

- ``coordinator/``: the SuperLink (TLS, SuperNode authentication on), the registration of
  the sites' public keys, the ``flwr run`` of the study (the app folder carries the study's
  config), and the server certificate;
- ``sites/site-<i>/``: one bundle per site: its SuperNode command with its site id and data
  root, the CA certificate and the site's private key (which never leaves the site);
- ``issuer/``: the CA that signed the server certificate (keep it offline);
- ``README.md``: who runs what, in which order.

Nothing here starts a process; Flower (the ``flower`` extra) must be installed where the
scripts run. Pure file writing, so it is tested without a network.
"""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Mapping, Optional

from fcl_ray.config import Config, ConfigError
from fcl_ray.config_io import load_config, to_dict
from fcl_ray.flower.credentials import Credentials, make_credentials

CONNECTION = "fcl-ray"        # the SuperLink connection's name in the coordinator's Flower config
DEFAULT_PORT = 9092           # the SuperLink's one HTTPS port (Fleet, Control and Runtime APIs)
DEFAULT_SUPERNODE_PORT = 9094  # each SuperNode's local port for its ClientApp processes
CERT_FILES = ("ca.crt", "server.pem", "server.key")
# `run.sh --set KEY=VALUE ...` reaches the apps as one run-config string, the overrides
# joined by this (Flower's run config holds no lists).
SET_SEPARATOR = ";"
# coordinator/run.sh's own flags, as `fcl-ray run`'s: --resume and --overwrite become the run
# config's booleans, each --set KEY=VALUE one part of its `set` string (study_from_run_config);
# anything else goes to `flwr run` as it is. A --set that the string cannot carry is one line.
# (The ';' in it is SET_SEPARATOR.)
RUN_SH_ARGUMENTS = r"""args=()
sets=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --resume) args+=(--run-config resume=true) ;;
    --overwrite) args+=(--run-config overwrite=true) ;;
    --set)
      case "${2-}" in
        *\;*|*\'*) echo "fcl-ray: error: --set '${2-}': one KEY=VALUE without ';' or quotes (') in it, e.g. --set 'finetune.n_labeled=[1,2]'"; exit 2 ;;
        ?*=*) sets+=("$2"); shift ;;
        *) echo "fcl-ray: error: --set '${2-}': expected KEY=VALUE, e.g. --set 'finetune.n_labeled=[1,2]'"; exit 2 ;;
      esac ;;
    *) args+=("$1") ;;
  esac
  shift
done
if [ "${#sets[@]}" -gt 0 ]; then
  args+=(--run-config "set='$(IFS=';'; echo "${sets[*]}")'")
fi"""


def check_flower_study(cfg: Config) -> None:
    """Refuse (one line) what the Flower runtime does not run yet, before anything starts."""
    unsupported = [
        (cfg.probes.enabled, "probes.enabled", "false (frozen-encoder probes run on Ray only)"),
        (cfg.finetune.upper_bound, "finetune.upper_bound", "false"),
        (bool(cfg.finetune.encoder), "finetune.encoder", "empty (pre-train in the study)"),
        (cfg.pretrain.probe_every > 0, "pretrain.probe_every", "0"),
        ("supervised_encoder" in cfg.pretrain.methods, "pretrain.methods",
         "methods without the positive control (supervised_encoder)"),
        (cfg.data.kind != "synthetic" and bool(cfg.data.root), "data.root",
         "unset: give data.client_roots (each site's own folder; its SuperNode's data-root "
         "replaces it)"),
    ]
    for bad, key, allowed in unsupported:
        if bad:
            raise ConfigError(f"{key}: the Flower runtime supports only {allowed}")


def app_pyproject(cfg: Config, wait_s: int = 300) -> str:
    """The Flower app (FAB) of the study: its components are fcl-ray's own modules, installed
    at every party; the run config carries the study's config as JSON."""
    study = json.dumps(to_dict(cfg), sort_keys=True)
    return f"""# Written by `fcl-ray deploy`: the Flower app of study '{cfg.experiment.name}'.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fcl-ray-study"
version = "1.0.0"
description = "fcl-ray study {cfg.experiment.name} on Flower"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fclray"

[tool.flwr.app.components]
serverapp = "fcl_ray.flower.server_app:app"
clientapp = "fcl_ray.flower.client_app:app"

[tool.flwr.app.config]
wait-s = {wait_s}
resume = false
overwrite = false
set = ""
study = {json.dumps(study)}
"""


def study_from_run_config(run_config: Mapping) -> dict:
    """The study's config (as a dict of sections) from a run's Flower run config: the one
    ``fcl-ray deploy`` wrote (``study``), with ``run.sh --set KEY=VALUE`` overrides (``set``)
    applied as ``fcl-ray run --set`` applies them. The ServerApp and every ClientApp read it
    this way, so they agree on the grid; a bad override is one ConfigError."""
    study = json.loads(run_config["study"])
    overrides = [text for text in str(run_config.get("set", "")).split(SET_SEPARATOR)
                 if text.strip()]
    return to_dict(load_config(study, overrides)) if overrides else study


def parse_site_roots(items: list[str]) -> dict[int, str]:
    """``--data-root SITE=PATH`` flags as {site: path}; a malformed one is one line."""
    roots = {}
    for item in items:
        site, sep, path = item.partition("=")
        if not sep or not site.strip().isdigit() or not path:
            raise ConfigError(f"--data-root '{item}': expected SITE=PATH, e.g. 0=/data/site0")
        roots[int(site)] = path
    return roots


def with_output_under(cfg: Config, coordinator: Path) -> Config:
    """``cfg`` with a relative ``experiment.output_dir`` placed under the coordinator's
    folder (absolute: the ServerApp runs in a process of the SuperLink, elsewhere)."""
    import dataclasses

    if Path(cfg.experiment.output_dir).is_absolute():
        return cfg
    where = str((coordinator / cfg.experiment.output_dir).resolve())
    return dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment,
                                                                   output_dir=where))


def _script(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n# Written by `fcl-ray deploy`.\nset -euo pipefail\n"
                    'cd "$(dirname "$0")"\n' + "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def _copy(src: Path, dst: Path, private: bool = False) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    dst.chmod(0o600 if private else 0o644)
    return dst


def _given_certificates(certs: Path, sites: int, out: Path) -> Credentials:
    """An existing CA and server certificate (``--certs``); fresh site keys."""
    missing = [name for name in CERT_FILES if not (certs / name).is_file()]
    if missing:
        raise ConfigError(f"--certs {certs}: missing {', '.join(missing)} (needs "
                          f"{', '.join(CERT_FILES)})")
    made = make_credentials(out, ["localhost"], sites)   # the site keys; certificates replaced
    return Credentials(ca_cert=certs / "ca.crt", ca_key=made.ca_key,
                       server_cert=certs / "server.pem", server_key=certs / "server.key",
                       site_keys=made.site_keys, site_public_keys=made.site_public_keys)


def write_deployment(cfg: Config, out: Path, host: str, port: int = DEFAULT_PORT,
                     site_roots: Optional[dict[int, str]] = None, bind: str = "0.0.0.0",
                     supernode_port: int = DEFAULT_SUPERNODE_PORT,
                     certs: Optional[Path] = None, wait_s: int = 300) -> list[Path]:
    """Write the deployment of ``cfg`` under ``out``; the paths written, README first.

    ``host``: the SuperLink's address as the sites reach it (in its certificate);
    ``site_roots``: each site's data folder on its own host (default: a placeholder to edit);
    ``bind``: the address the SuperLink listens on; ``supernode_port``: site i's SuperNode
    serves its ClientApps on this port + i (local to the site's host)."""
    check_flower_study(cfg)
    sites = cfg.data.clients
    roots = site_roots or {}
    unknown = sorted(set(roots) - set(range(sites)))
    if unknown:
        raise ConfigError(f"--data-root: site(s) {unknown} are not sites of this study "
                          f"(data.clients={sites}: sites 0..{sites - 1})")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty (a deployment holds keys: write a new one "
                          f"into an empty folder)")
    cfg = with_output_under(cfg, out / "coordinator")
    issuer = out / "issuer"
    creds = (_given_certificates(Path(certs), sites, issuer) if certs
             else make_credentials(issuer, [host, "localhost", "127.0.0.1"], sites))
    coord = out / "coordinator"
    written = [
        _copy(creds.ca_cert, coord / "certificates" / "ca.crt"),
        _copy(creds.server_cert, coord / "certificates" / "server.pem"),
        _copy(creds.server_key, coord / "certificates" / "server.key", private=True)]
    app = coord / "app" / "pyproject.toml"
    app.parent.mkdir(parents=True, exist_ok=True)
    app.write_text(app_pyproject(cfg, wait_s))
    written.append(app)
    flwr_home = 'export FLWR_HOME="${FLWR_HOME:-$PWD/flwr-home}"'
    written.append(_script(coord / "superlink.sh", [
        flwr_home,
        "exec flower-superlink --ssl-ca-certfile certificates/ca.crt "
        "--ssl-certfile certificates/server.pem --ssl-keyfile certificates/server.key "
        "--enable-supernode-auth --disable-runtime-dependency-installation "
        f"--host {bind} --port {port} --database superlink.db"]))
    for site, public in enumerate(creds.site_public_keys):
        written.append(_copy(public, coord / "site-keys" / f"site-{site}.pub"))
    # The flwr CLI wants the CA's absolute path: written where the folder now lies.
    connection = [flwr_home, 'mkdir -p "$FLWR_HOME"', 'cat > "$FLWR_HOME/config.toml" <<EOF',
                  "[superlink]", f'default = "{CONNECTION}"', f"[superlink.{CONNECTION}]",
                  f'address = "{host}:{port}"',
                  'root-certificates = "$PWD/certificates/ca.crt"', "EOF"]
    written.append(_script(coord / "register.sh", connection + [
        f"flwr supernode register site-keys/site-{s}.pub {CONNECTION}" for s in range(sites)]))
    # `run.sh --resume` / `--overwrite` / `--set KEY=VALUE` as `fcl-ray run`'s flags: the
    # run config's booleans and its `set` string (see study_from_run_config).
    # flwr run exits 0 whatever the ServerApp did: the study's own last words say how it ended.
    written.append(_script(coord / "run.sh", RUN_SH_ARGUMENTS.splitlines() + connection + [
        f'flwr run app {CONNECTION} --stream ${{args[@]+"${{args[@]}}"}} 2>&1 | tee run.log',
        "if grep -q '^fcl-ray: error:' run.log; then exit 2; fi",
        "if grep -q '^fcl-ray: federation stopped:' run.log; then exit 1; fi",
        # Stopped from outside (flwr stop, the SuperLink's host went down): not finished.
        "if ! grep -q '^fcl-ray: results written to' run.log; then exit 1; fi"]))
    for site in range(sites):
        bundle = out / "sites" / f"site-{site}"
        root = roots.get(site, f"/path/to/site-{site}/data")
        node_config = f'site={site} data-root={json.dumps(root)}'
        written += [_copy(creds.ca_cert, bundle / "ca.crt"),
                    _copy(creds.site_keys[site], bundle / f"site-{site}.key", private=True),
                    _script(bundle / "supernode.sh", [
                        flwr_home,
                        "exec flower-supernode --root-certificates ca.crt "
                        f"--superlink {host}:{port} "
                        f"--auth-supernode-private-key site-{site}.key "
                        f"--node-config {shlex.quote(node_config)} "
                        f"--port {supernode_port + site} \"$@\""])]
    for key in creds.site_keys:   # the site bundles hold the only copies of their keys
        if key.is_relative_to(issuer):
            key.unlink()
    readme = out / "README.md"
    readme.write_text(_readme(cfg, host, port, bind, sites, roots))
    return [readme] + written


def _readme(cfg: Config, host: str, port: int, bind: str, sites: int,
            roots: dict[int, str]) -> str:
    site_lines = "\n".join(
        f"| site {s} | `sites/site-{s}/` | `{roots.get(s, f'/path/to/site-{s}/data (edit supernode.sh)')}` |"
        for s in range(sites))
    return f"""# Flower deployment of study `{cfg.experiment.name}`

Written by `fcl-ray deploy`. Every party installs the same fcl-ray with the Flower extra
(`pip install 'fcl-ray[flower]'`). See docs/deploy-flower.md for the why.

## Who runs what

| party | gets | runs |
| --- | --- | --- |
| coordinator (`{host}`) | `coordinator/` | `superlink.sh`, then `register.sh` once, then `run.sh` |
{chr(10).join(f"| site {s} | `sites/site-{s}/` | `supernode.sh` |" for s in range(sites))}

Data roots (each site's own folder, in its `--node-config`):

| site | bundle | data root |
| --- | --- | --- |
{site_lines}

`issuer/` holds the CA's private key: keep it offline; no party needs it to run.

## Order

1. Coordinator: `coordinator/superlink.sh` (listens on `{bind}:{port}`, HTTPS, SuperNode
   authentication on; its state in `coordinator/superlink.db`).
2. Coordinator: `coordinator/register.sh` registers the sites' public keys
   (`coordinator/site-keys/*.pub`); only these SuperNodes may connect.
3. Each site: `sites/site-<i>/supernode.sh` dials out to `{host}:{port}` (TLS, verified
   with `ca.crt`; signs with its own `site-<i>.key`).
4. Coordinator: `coordinator/run.sh` starts the study and streams its log; results in
   `{cfg.experiment.output_dir}` on the coordinator's host. As `fcl-ray run`: `run.sh --resume`
   continues a stopped study, `--overwrite` moves an earlier one aside, and `--set KEY=VALUE`
   changes the study for this run (`run.sh --resume --set 'finetune.n_labeled=[1,2]'` grows
   its grid).

## Ports

- inbound at the coordinator: TCP {port} (from the sites and from the `flwr` CLI);
- the sites: outbound only, to `{host}:{port}`; each SuperNode's own port is local to its
  host (it serves the site's ClientApp processes).
"""
