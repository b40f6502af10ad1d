"""A real Flower deployment on 127.0.0.1, from the files ``fcl-ray deploy`` writes: the
SuperLink (TLS, SuperNode authentication), the sites' key registration, one SuperNode per
site, then the study's ``flwr run``. Every process runs in its own session and is stopped
(its whole process group) on the way out; a site's SuperNode can be killed and started
again in between."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"   # flwr's commands
    env.pop("FLWR_HOME", None)   # each party's own, beside its scripts
    return env


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group, SIGKILL what is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            os.killpg(process.pid, 0)   # children of the group may outlive the leader
            time.sleep(0.5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SuperLink exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the SuperLink did not listen on {port} within {timeout}s")


def _launch(command: list[str], log: Path) -> subprocess.Popen:
    """``command`` in its own session, its output appended to ``log``."""
    with open(log, "ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)


class Federation:
    """The running parties of a loopback deployment: the SuperLink and each site's
    SuperNode (``supernodes[site]``)."""

    def __init__(self, deployment: Path):
        self.deployment = deployment
        self.started: list[subprocess.Popen] = []
        self.supernodes: dict[int, subprocess.Popen] = {}

    def launch(self, script: Path, name: str) -> subprocess.Popen:
        process = _launch(["bash", str(script)], self.deployment / f"{name}.log")
        self.started.append(process)
        return process

    def start_supernode(self, site: int) -> None:
        """Site ``site``'s ``supernode.sh``, as its operator runs it (again, after a kill)."""
        self.supernodes[site] = self.launch(
            self.deployment / "sites" / f"site-{site}" / "supernode.sh", f"site-{site}")

    def kill_supernode(self, site: int) -> None:
        """SIGKILL to the SuperNode's process group (its ClientApp too): a crashed host."""
        process = self.supernodes[site]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def federation(deployment: Path, sites: int, port: int) -> Iterator[Federation]:
    """Start the SuperLink and the sites' SuperNodes of ``deployment``; stop everything
    afterwards."""
    parties = Federation(deployment)
    try:
        link = parties.launch(deployment / "coordinator" / "superlink.sh", "superlink")
        _wait_for_port(port, link, deployment / "superlink.log")
        subprocess.run(["bash", str(deployment / "coordinator" / "register.sh")], env=_env(),
                       check=True, capture_output=True, timeout=60)
        for site in range(sites):
            parties.start_supernode(site)
        yield parties
    finally:
        for process in reversed(parties.started):
            _stop(process)


def start_study(deployment: Path, *flags: str) -> subprocess.Popen:
    """``coordinator/run.sh`` with ``flags`` in the background; its log in ``study.log``."""
    (deployment / "study.log").unlink(missing_ok=True)
    return _launch(["bash", str(deployment / "coordinator" / "run.sh"), *flags],
                   deployment / "study.log")


def finish_study(study: subprocess.Popen, deployment: Path,
                 timeout: float) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_study` run to end (stopped past ``timeout``); its log."""
    try:
        study.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(study)
        raise
    return subprocess.CompletedProcess(study.args, study.returncode,
                                       (deployment / "study.log").read_text(), "")


def stop_study(deployment: Path) -> None:
    """``flwr stop`` of the study's run (its id from the log), as the coordinator's operator
    would: the ServerApp ends mid-study."""
    run_id = re.search(r"run_id `(\d+)`", (deployment / "study.log").read_text()).group(1)
    coordinator = deployment / "coordinator"
    subprocess.run(["flwr", "stop", run_id, "fcl-ray"], cwd=coordinator, check=True,
                   env={**_env(), "FLWR_HOME": str(coordinator / "flwr-home")},
                   capture_output=True, timeout=120)


def run_study(deployment: Path, timeout: float, *flags: str) -> subprocess.CompletedProcess:
    """``coordinator/run.sh``: the study, its log streamed until the run ends."""
    return finish_study(start_study(deployment, *flags), deployment, timeout)
