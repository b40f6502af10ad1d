"""A real Flower deployment on 127.0.0.1, from the files ``fcl-ray deploy`` writes: the
SuperLink (TLS, SuperNode authentication), the sites' key registration, one SuperNode per
site, then the study's ``flwr run``. Every process runs in its own session and is stopped
(its whole process group) on the way out."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@contextlib.contextmanager
def federation(deployment: Path, sites: int, port: int) -> Iterator[list[subprocess.Popen]]:
    """Start the SuperLink and the sites' SuperNodes of ``deployment``; yield the SuperNode
    processes; stop everything afterwards."""
    started: list[subprocess.Popen] = []

    def launch(script: Path, name: str) -> subprocess.Popen:
        log = open(deployment / f"{name}.log", "wb")
        process = subprocess.Popen(["bash", str(script)], stdout=log, stderr=subprocess.STDOUT,
                                   env=_env(), start_new_session=True)
        started.append(process)
        return process

    try:
        link = launch(deployment / "coordinator" / "superlink.sh", "superlink")
        _wait_for_port(port, link, deployment / "superlink.log")
        subprocess.run(["bash", str(deployment / "coordinator" / "register.sh")], env=_env(),
                       check=True, capture_output=True, timeout=60)
        yield [launch(deployment / "sites" / f"site-{s}" / "supernode.sh", f"site-{s}")
               for s in range(sites)]
    finally:
        for process in reversed(started):
            _stop(process)


def run_study(deployment: Path, timeout: float) -> subprocess.CompletedProcess:
    """``coordinator/run.sh``: the study, its log streamed until the run ends."""
    return subprocess.run(["bash", str(deployment / "coordinator" / "run.sh")], env=_env(),
                          capture_output=True, text=True, timeout=timeout)
