"""Where the federation meets Ray: start or join Ray, size and place the client actors,
create them, and wait on them so that SIGTERM/SIGINT stop the driver cleanly.

This is the one module that starts Ray (:func:`connect_ray`); the driver, the sweep and the
bench all go through it.
"""
from __future__ import annotations

import math
import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import ray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group as new_placement_group
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from fcl_ray.config import Config, ConfigError
from fcl_ray.errors import RunInterrupted  # noqa: F401  (raised here; imported from here)
from fcl_ray.config_io import to_dict
from fcl_ray.federation.coordinator import Coordinator, FederationError
from fcl_ray.federation.lean import BLOCK_VARIABLE, NOT_IN_ACTORS
from fcl_ray.federation.actors import ClientActor, ClientHost, HostedClient
from fcl_ray.log import ray_notices_as_info

# The client actors' environment: glibc's malloc keeps at most 2 arenas (one per thread by
# default, each holding freed memory: ~100 MB more resident per actor, measured), and
# lean.py keeps MLflow, pandas, matplotlib... out of the process. FCL_RAY_LEAN_ACTORS=0 turns
# both off (to measure what they save).
CLIENT_ENV = {"MALLOC_ARENA_MAX": "2", BLOCK_VARIABLE: ",".join(NOT_IN_ACTORS)}


def client_runtime_env(privacy: bool = False) -> dict:
    """The client actors' environment. ``privacy``: the accountant (dp-accounting) imports
    scipy.signal and scipy.stats, so a run with ``privacy.*`` set leaves them unblocked."""
    if os.environ.get("FCL_RAY_LEAN_ACTORS", "1") == "0":
        return {}
    env = dict(CLIENT_ENV)
    if privacy:
        env[BLOCK_VARIABLE] = ",".join(m for m in NOT_IN_ACTORS if not m.startswith("scipy."))
    return {"runtime_env": {"env_vars": env}}


class PlacementError(ConfigError):
    """The cluster cannot host the federation's clients as configured (CLI: one line, exit 2)."""


_STOP: dict = {"signum": None, "output_dir": ""}   # set by the signal handler below


def _raise_if_stopped() -> None:
    if _STOP["signum"] is not None:
        raise RunInterrupted(_STOP["signum"], _STOP["output_dir"])


def stop_on_signals(output_dir: str) -> dict:
    """Turn SIGTERM (``ray job stop``, Kubernetes) and SIGINT into :class:`RunInterrupted`;
    return the handlers they had, for :func:`restore_signals`.

    Call after ``ray.init``, which installs a SIGTERM handler that calls ``sys.exit`` in the
    middle of whatever the driver waits on (seen as exit 134 and a native stack dump). Only
    the main thread can set handlers; elsewhere (a Tune trial) the caller owns the signals."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _STOP["signum"] = None

    def handler(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGINT):   # the clean-up runs once, uninterrupted
            signal.signal(sig, signal.SIG_IGN)
        # Only remembered: Python handlers also run inside Ray's C++ waits, where an exception
        # turns into a SystemError or is lost and the run goes on. The driver's wait loop
        # (_call) raises RunInterrupted within half a second instead.
        _STOP.update(signum=signum, output_dir=output_dir)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    return previous


def restore_signals(previous: dict) -> None:
    """Give SIGTERM and SIGINT back the handlers :func:`stop_on_signals` found (a notebook's
    kernel interrupts with SIGINT after the run as before it)."""
    for sig, handler in previous.items():
        if handler is not None:   # None: set outside Python; nothing to put back
            signal.signal(sig, handler)


def connect_ray(cfg: Config) -> bool:
    """Join the configured cluster (``federation.address`` or ``RAY_ADDRESS``) or start a
    local Ray; True if this call started it (then the caller shuts it down). The one place
    in the platform that calls ``ray.init``."""
    if ray.is_initialized():
        return False
    address = cfg.federation.address or os.environ.get("RAY_ADDRESS")
    ray_notices_as_info()   # Ray's token-auth notice: one info line, not a stderr warning
    ray.init(address=address, logging_level="WARNING", log_to_driver=True)
    return True


def disconnect_ray(started: bool) -> None:
    """Shut Ray down if :func:`connect_ray` started it (a joined cluster keeps running)."""
    if started and ray.is_initialized():
        ray.shutdown()


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _can_host(node: dict, resources: dict, labels: dict) -> bool:
    have = node.get("Resources", {})
    return all(have.get(k, 0) >= v for k, v in resources.items()) \
        and all(node.get("Labels", {}).get(k) == v for k, v in labels.items())


def _pins(cfg: Config) -> list[tuple[dict, dict]]:
    """(custom resources, node labels) client i asks for; empty = any node."""
    fed, n = cfg.federation, cfg.data.clients
    return list(zip(fed.client_resources or [{}] * n, fed.client_labels or [{}] * n))


def client_cpus(cfg: Config, nodes: Optional[list[dict]] = None) -> float:
    """CPUs per client actor: as configured, or 'auto' = what fits on the nodes that will host
    the clients. A node that can host k of the clients (their site resources / labels match;
    any node with CPUs for an unpinned client) offers each of them 1/k of its CPUs; a client
    gets the best offer among its nodes, and every client the smallest of those, so all fit
    at once. One machine: its CPUs / clients; `cluster/local.sh`, one site per node: each
    client a whole worker node."""
    if cfg.federation.num_cpus_per_client != "auto":
        return cfg.federation.num_cpus_per_client
    nodes = [n for n in (nodes if nodes is not None else _alive_nodes())
             if n.get("Resources", {}).get("CPU", 0) > 0]
    hosts = [[j for j, node in enumerate(nodes) if _can_host(node, res, labels)]
             for res, labels in _pins(cfg)]
    if not nodes or not all(hosts):
        return 1.0   # nothing can host some client: the placement check names it
    load = [sum(j in h for h in hosts) for j in range(len(nodes))]
    share = min(max(nodes[j]["Resources"]["CPU"] / load[j] for j in h) for h in hosts)
    return max(math.floor(share * 100) / 100, 0.01)   # rounded down: the shares must fit


def client_bundles(cfg: Config, cpus: float) -> list[dict]:
    """One placement-group bundle per client: its CPUs, GPU share and site resources."""
    gpu = {"GPU": cfg.federation.num_gpus_per_client} if cfg.federation.num_gpus_per_client else {}
    return [{"CPU": cpus, **gpu, **res} for res, _ in _pins(cfg)]


def _describe_nodes(nodes: list[dict]) -> str:
    """The alive nodes' CPUs, GPUs, custom resources and labels, in one line."""
    hidden = ("memory", "object_store_memory", "node:")
    parts = []
    for node in nodes:
        res = {k: (int(v) if float(v).is_integer() else v) for k, v in node["Resources"].items()
               if not k.startswith(hidden)}
        labels = {k: v for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")}
        parts.append(f"{node.get('NodeManagerAddress', '?')} {res}"
                     + (f" labels {labels}" if labels else ""))
    return f"{len(nodes)} node(s): " + "; ".join(parts)


def reserve_federation(cfg: Config):
    """Reserve every client's resources as one placement group and wait until it is placed.

    Nothing starts until the whole federation fits; if the cluster cannot place it within
    ``federation.placement_timeout_s`` (no node has the resources, or they stay taken) this
    raises :class:`PlacementError` naming what was asked and what the cluster has, instead of
    waiting forever behind autoscaler warnings."""
    fed = cfg.federation
    cpus = client_cpus(cfg)
    bundles = client_bundles(cfg, cpus)
    labels = [dict(lab) for _, lab in _pins(cfg)]
    extra = {"bundle_label_selector": labels} if any(labels) else {}
    group = new_placement_group(bundles, strategy="PACK", name=f"fcl-{cfg.experiment.name}",
                                **extra)
    try:
        ray.get(group.ready(), timeout=fed.placement_timeout_s)
    except GetTimeoutError:
        remove_placement_group(group)
        asked = f"{len(bundles)} clients x {bundles[0]}" if all(b == bundles[0] for b in bundles) \
            else ", ".join(map(str, bundles))
        key = "federation.num_cpus_per_client" if fed.num_cpus_per_client != "auto" \
            else "federation.client_resources / client_labels"
        raise PlacementError(
            f"{key}: the cluster could not place {asked}"
            + (f" with labels {labels}" if any(labels) else "")
            + f" within federation.placement_timeout_s={fed.placement_timeout_s:g}s; "
            f"the cluster has {_describe_nodes(_alive_nodes())}") from None
    return group


def create_federation(cfg: Config, placement_group=None, first_client_bundle: int = 1):
    """One ClientActor per client (CPU share and GPU fraction from the config) + coordinator.

    Inside a placement group, client i goes to bundle ``first_client_bundle + i``. In a Tune
    trial's group (first_client_bundle=1) the coordinator shares bundle 0 with the trainable,
    so concurrent federations never take each other's resources; in the federation's own
    group (:func:`reserve_federation`, first_client_bundle=0) it needs no bundle (0 CPUs).

    With ``federation.clients_per_actor`` = k > 1, clients i..i+k-1 share one
    :class:`ClientHost` actor, placed in client i's bundle and running k times that bundle's
    threads (the other k-1 bundles stay reserved for it); the returned list still has one
    entry per client, a :class:`HostedClient` the coordinator calls like an actor handle.
    """
    n, fed = cfg.data.clients, cfg.federation
    if placement_group is not None and fed.num_cpus_per_client == "auto":
        cpus = placement_group.bundle_specs[first_client_bundle].get("CPU", 1.0)
    else:
        cpus = client_cpus(cfg)
    threads = max(1, int(cpus))
    cfg_dict = to_dict(cfg)

    def placed(bundle: int) -> dict:
        if placement_group is None or bundle < 0:
            return {}
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group, placement_group_bundle_index=bundle)}

    def pinned(i: int) -> dict:   # site resources keep a site's data on its own node
        opts = {"resources": fed.client_resources[i]} if fed.client_resources else {}
        if fed.client_labels and placement_group is None:  # in a group: its bundle's selector
            opts["label_selector"] = fed.client_labels[i]
        return opts

    def options(i: int) -> dict:
        return dict(num_cpus=cpus, num_gpus=fed.num_gpus_per_client,
                    max_concurrency=cfg.finetune.concurrency, max_restarts=fed.max_restarts,
                    **placed(first_client_bundle + i), **pinned(i),
                    **client_runtime_env(cfg.privacy.enabled))

    # A dead client is restarted by Ray (its __init__ reloads its own data); the coordinator
    # then rebuilds its method and it rejoins from the global weights.
    k = fed.clients_per_actor
    if k == 1:
        client_cls = ray.remote(ClientActor)
        clients = [client_cls.options(**options(i)).remote(cfg_dict, i, threads,
                                                           fed.num_gpus_per_client)
                   for i in range(n)]
    else:
        host_cls = ray.remote(ClientHost)
        clients = []
        for first in range(0, n, k):
            ids = list(range(first, min(first + k, n)))
            host = host_cls.options(**options(first)).remote(
                cfg_dict, ids, max(1, int(cpus * len(ids))), fed.num_gpus_per_client)
            clients += [HostedClient(host, i) for i in ids]
    # The coordinator is not restarted: losing it stops the run (resume with --resume).
    coordinator = ray.remote(Coordinator).options(num_cpus=0, max_restarts=0,
                                                  **placed(first_client_bundle - 1)
                                                  ).remote(clients, cfg_dict)
    return clients, coordinator


def actor_handles(clients: list) -> list:
    """The distinct actors behind ``clients`` (hosts once each), e.g. to ``ray.kill`` them."""
    handles = [c.host if isinstance(c, HostedClient) else c for c in clients]
    return list({h._actor_id: h for h in handles}.values())


def _raise_as_ours(err: Exception, what: str, cfg: Config) -> None:
    """A Ray error met while waiting on the federation, as the run's own errors: bad input
    inside (a refused checkpoint) stays one line (exit 2), a federation that cannot go on or
    an actor that died is a FederationError, anything else is raised as it came."""
    if isinstance(err, RayTaskError):   # raised inside an actor (checked first: such errors
        if isinstance(err.cause, FederationError):    # can also be RayActorError instances)
            raise FederationError(f"{what}: {err.cause}") from None
        if isinstance(err.cause, ConfigError):
            raise err.cause from None
        raise err
    again = (f"finished results and the last checkpoint are in {cfg.experiment.output_dir}; "
             f"rerun the same command with --resume")
    if isinstance(err, RayActorError):
        raise FederationError(f"an actor died during {what}; {again}") from None
    if isinstance(err, ObjectLostError):   # OwnerDiedError: the coordinator made the call
        raise FederationError(f"the coordinator died during {what}; {again}") from None
    raise err


def await_coordinator(ref, what: str, cfg: Config):
    """ray.get on a coordinator call, turning its death into one clear FederationError.
    Waits in short slices so a SIGTERM/SIGINT stops the driver within a second."""
    while not ray.wait([ref], timeout=0.5)[0]:
        _raise_if_stopped()
    _raise_if_stopped()
    try:
        return ray.get(ref)
    except RayTaskError as err:
        _raise_as_ours(err, what, cfg)
    except RayActorError:
        raise FederationError(
            f"the coordinator died during {what}; finished results and the last checkpoint "
            f"are in {cfg.experiment.output_dir}; rerun the same command with --resume") from None


def as_finished(groups: list[list], what: str, cfg: Config) -> Iterator[tuple[int, list]]:
    """``(i, results)`` for each group of calls (a fine-tuning setting: one call per client)
    as its last call finishes, in finishing order. Waits in short slices so a SIGTERM/SIGINT
    stops the driver within a second; errors as :func:`await_coordinator`'s."""
    group_of = {ref: i for i, refs in enumerate(groups) for ref in refs}
    left = [len(refs) for refs in groups]
    pending = list(group_of)
    while pending:
        ready, _ = ray.wait(pending, num_returns=1, timeout=0.5)
        _raise_if_stopped()
        if ready:   # and whatever else has finished meanwhile
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
        for ref in ready:
            i = group_of[ref]
            left[i] -= 1
            if left[i] == 0:
                try:
                    results = ray.get(groups[i])
                except (RayTaskError, RayActorError, ObjectLostError) as err:
                    _raise_as_ours(err, what, cfg)
                yield i, results


def gather(refs: list):
    """ray.get on a list of actor calls (client info, one-off coordinator calls)."""
    return ray.get(refs)


@contextmanager
def running_federation(cfg: Config, placement_group=None) -> Iterator[tuple[list, object]]:
    """Start or join Ray, create the clients and the coordinator, and yield them; on the way
    out kill them, free the placement group and stop Ray if this call started it.

    Outside a Tune trial (``placement_group`` None) the federation first reserves its own
    group (:func:`reserve_federation`), so nothing starts until every client fits."""
    started_ray = connect_ray(cfg)
    clients, coordinator, own_group = [], None, None
    try:
        if placement_group is None:
            own_group = reserve_federation(cfg)
            clients, coordinator = create_federation(cfg, own_group, first_client_bundle=0)
        else:
            clients, coordinator = create_federation(cfg, placement_group)
        yield clients, coordinator
    finally:
        for actor in actor_handles(clients) + ([coordinator] if coordinator else []):
            ray.kill(actor)
        if own_group is not None:
            remove_placement_group(own_group)
        disconnect_ray(started_ray)
