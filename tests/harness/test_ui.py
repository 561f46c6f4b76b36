import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_mlflow_on_loopback(tmp_path):
    port = _free_port()
    bindir = Path(sys.executable).parent
    proc = subprocess.Popen([str(bindir / "spatialboost"), "ui", "--port", str(port), "--workspace", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    try:
        deadline = time.time() + 90
        status = None
        while time.time() < deadline and proc.poll() is None:
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status
                break
            except OSError:
                time.sleep(1)
        assert status == 200, proc.stdout.read().decode() if proc.poll() is not None else "no answer in 90 s"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
