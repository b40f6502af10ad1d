"""A real ``mlflow server`` for tests, started by cluster/mlflow-server.sh on a free loopback
port, once per test session (shared by the modules that use it) and stopped at the end."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from ports import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "mlflow-server.sh"
_SERVER: dict = {}


def _script(action: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def mlflow_server(request) -> dict:
    """{'uri', 'dir'} of a running server; started on first use, stopped at session end."""
    if not _SERVER:
        state = Path(tempfile.mkdtemp(prefix="fcl-mlflow-"))
        env = os.environ | {"MLFLOW_PORT": str(free_port()), "MLFLOW_DIR": str(state)}
        up = _script("up", env)
        if up.returncode != 0:
            _script("down", env)
            pytest.fail(f"mlflow server did not start: {up.stdout}{up.stderr}")
        uri = _script("uri", env).stdout.strip()
        _SERVER.update(uri=uri, dir=state, env=env)

        def stop() -> None:
            _script("down", env)
            _SERVER.clear()
        request.config.add_cleanup(stop)
    return _SERVER
