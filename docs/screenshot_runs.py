"""Screenshot of an MLflow experiment's runs table (the "Model training" view), for the README
and docs/tracking.md.

Starts ``mlflow ui`` on a free loopback port over the given store, waits until it answers,
photographs ``#/experiments/<id>?workflowType=machine_learning`` with headless Chromium
(``apt-get install chromium``), and stops the server it started.

    python docs/screenshot_runs.py --store sqlite:///mlflow.db --experiment quickstart \
        --out docs/mlflow_runs.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"screenshot: {url} did not answer within {seconds:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite:///mlflow.db", help="MLflow backend store URI")
    parser.add_argument("--experiment", default="quickstart", help="experiment name")
    parser.add_argument("--out", default="docs/mlflow_runs.png")
    parser.add_argument("--size", default="1600,560", help="window width,height in pixels")
    args = parser.parse_args()

    from mlflow import MlflowClient

    exp = MlflowClient(args.store).get_experiment_by_name(args.experiment)
    if exp is None:
        raise SystemExit(f"screenshot: no experiment '{args.experiment}' in {args.store}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshot: needs Chromium (apt-get install -y chromium)")
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    port = free_port()
    server = subprocess.Popen([str(mlflow_bin), "ui", "--backend-store-uri", args.store,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)   # its workers go with it on stop
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", 180)
        url = f"{base}/#/experiments/{exp.experiment_id}?workflowType=machine_learning"
        out = Path(args.out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as profile:   # a fresh browser: no remembered view
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--user-data-dir={profile}",
                            f"--window-size={args.size}", "--virtual-time-budget=20000",
                            f"--screenshot={out}", url],
                           check=True, timeout=180, capture_output=True)
        print(f"wrote {out} ({url})")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
