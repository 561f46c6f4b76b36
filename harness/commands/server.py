"""``spatialboost server``: a team's tracking server for a trial on one machine — PostgreSQL + ``mlflow
server`` serving the artifacts — started and stopped together.

In a lab the same two pieces run as services (a managed PostgreSQL, ``mlflow server`` behind a proxy);
this command is the exact setup the README's "team setup" describes, with the database kept in the
workspace (``server/pg``) and the artifacts in ``server/artifacts``. Every command then takes
``--tracking-uri http://HOST:PORT`` (or ``MLFLOW_TRACKING_URI``); Optuna sweeps share the same PostgreSQL
(database ``optuna``). Bound to 127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError


class ServerError(UserError):
    """PostgreSQL or the MLflow server could not be started; the message says which and why."""


@dataclass
class Postgres:
    url: str            # SQLAlchemy URL of the MLflow database
    optuna_url: str     # the Optuna database on the same server
    data_dir: Path
    stop_cmd: list[str]

    def stop(self) -> None:
        subprocess.run(self.stop_cmd, capture_output=True)


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin")) or \
        ([Path(shutil.which("initdb")).parent] if shutil.which("initdb") else [])
    if not found:
        raise ServerError("PostgreSQL is not installed (make setup installs Debian's postgresql; or point "
                          "--tracking-uri at an existing server)")
    return found[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(data_dir: Path, port: int, user: str = "spatialboost") -> Postgres:
    """Start (initialising on first use) a PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1."""
    bindir = _bindir()
    data_dir = Path(data_dir)
    as_user = ["runuser", "-u", "postgres", "--"] if getpass.getuser() == "root" else []
    fresh = not (data_dir / "PG_VERSION").is_file()
    if fresh:
        data_dir.mkdir(parents=True, exist_ok=True)
        if as_user:   # postgres refuses to run as root: its folders (and the path to them) must be its own
            shutil.chown(data_dir, "postgres")
            for parent in data_dir.parents:
                if parent != Path("/") and not os.access(parent, os.X_OK):
                    os.chmod(parent, parent.stat().st_mode | 0o011)
        r = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data_dir), "-U", user, "--auth=trust"],
                           capture_output=True, text=True)
        if r.returncode:
            raise ServerError(f"initdb {data_dir} failed: {r.stderr.strip()[-500:]}")
    r = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "log"), "-w",
                        "-o", f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1", "start"],
                       capture_output=True, text=True)
    if r.returncode:
        raise ServerError(f"PostgreSQL did not start on port {port} (log: {data_dir / 'log'}): "
                          f"{(r.stderr or r.stdout).strip()[-500:]}")
    for db in ("mlflow", "optuna"):
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, db],
                       capture_output=True)     # exists already after the first start: fine
    stop = [*as_user, str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "stop"]
    base = f"{user}@127.0.0.1:{port}"
    return Postgres(f"postgresql+psycopg://{base}/mlflow", f"postgresql+psycopg://{base}/optuna", data_dir, stop)


def start_mlflow_server(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000,
                        timeout: float = 120.0) -> subprocess.Popen:
    """``mlflow server`` with artifacts served by the server (clients never need its filesystem)."""
    Path(artifacts).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri, "--serve-artifacts",
         "--artifacts-destination", str(Path(artifacts).resolve()), "--host", host, "--port", str(port),
         "--workers", "2"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited ({proc.returncode}): "
                              f"{proc.stderr.read().decode(errors='replace')[-800:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_process_group(proc)
    raise ServerError(f"mlflow server did not answer on {url} within {timeout:.0f} s")


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def cmd_server(args) -> int:
    from harness.workspace import open_workspace
    ws = open_workspace(args.workspace)
    root = ws.sub("server")
    pg = start_postgres(root / "pg", args.pg_port or free_port())
    try:
        proc = start_mlflow_server(pg.url, root / "artifacts", args.host, args.port)
    except BaseException:
        pg.stop()
        raise
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MLflow tracking server: http://{host}:{args.port}   (backend {pg.url}, artifacts served from "
          f"{root / 'artifacts'})\n"
          f"  export MLFLOW_TRACKING_URI=http://{host}:{args.port}\n"
          f"  Optuna storage for sweeps: --storage {pg.optuna_url.replace('+psycopg', '')}\n"
          "Ctrl-C stops both.", flush=True)
    stopping: list[int] = []

    def stop(signum, frame):
        stopping.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        while not stopping and proc.poll() is None:
            time.sleep(0.5)
    finally:
        stop_process_group(proc)
        pg.stop()
    return 0 if stopping else (proc.returncode or 1)


def add_server_parser(sub) -> None:
    p = sub.add_parser("server", help="a local team tracking server: PostgreSQL + mlflow server (artifacts served)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", help="where the database and artifacts live (server/ inside it)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for a lab network)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--pg-port", type=int, help="PostgreSQL port (default: a free one)")
    p.set_defaults(func=cmd_server)
