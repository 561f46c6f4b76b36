"""MLflow tracking: one run per (encoder, suite, head, config), with provenance, reused by config hash.

Params are a small whitelist of flat values (MLflow caps params); the resolved config is an artifact.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import harness
from harness.errors import UserError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow").setLevel(logging.WARNING)

PACKAGES = ("torch", "torchvision", "timm", "transformers", "mlflow", "optuna", "numpy", "mujoco",
            "mmsegmentation", "peft")
SOURCE_ROOT = Path(__file__).resolve().parent.parent


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or used; the message names the URI."""


# -- runs whose process is gone --------------------------------------------------------------------------
# Every run records the process that owns it (host, pid, the pid's start time) and a heartbeat tag that a
# daemon thread refreshes. At the start of the next command, RUNNING runs whose process is gone (same
# host: the pid is dead or belongs to another process now; other hosts: no heartbeat for STALE_SECONDS)
# are marked KILLED with an ``error`` tag, so a kill -9 never leaves a run shown as in progress.
HEARTBEAT_SECONDS = 60
STALE_SECONDS = 15 * 60


def _proc_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' where unknown: with the pid it
    identifies a process even after its pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int, start: str = "") -> bool:
    """Whether process ``pid`` (started at ``start``, see :func:`_proc_start`) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start:
        now = _proc_start(pid)
        if now and now != start:
            return False            # the pid was reused by another process
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False        # a zombie: dead, not yet reaped by its parent
        except (OSError, IndexError):
            pass
    return True


def process_tags() -> dict[str, str]:
    """Tags that name the process owning a run (read by :func:`reap_dead_runs`)."""
    import time
    return {"process.host": platform.node(), "process.pid": str(os.getpid()),
            "process.start": _proc_start(os.getpid()), "heartbeat": str(int(time.time()))}


def run_is_dead(tags: Mapping[str, str], now: float | None = None) -> str | None:
    """Why a RUNNING run with these tags has no live owner, or None (alive, or unknown)."""
    import time
    now = time.time() if now is None else now
    host, pid = tags.get("process.host"), tags.get("process.pid")
    if host == platform.node() and pid and pid.isdigit():
        if not pid_alive(int(pid), tags.get("process.start", "")):
            return f"its process {pid} on {host} ended without finishing the run (killed?)"
        return None
    beat = tags.get("heartbeat", "")
    if beat.isdigit() and now - int(beat) > STALE_SECONDS:
        return (f"no heartbeat from its process {pid} on {host} for {int(now - int(beat))} s "
                f"(killed or disconnected?)")
    return None


def reap_dead_runs(client, experiment_ids: list[str] | None = None) -> list[str]:
    """Mark RUNNING runs whose process is gone as KILLED (tag ``error`` says why); returns their ids."""
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    reaped = []
    if not ids:
        return reaped
    for run in client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=5000):
        why = run_is_dead(run.data.tags)
        if why is None:
            continue
        try:
            client.set_tag(run.info.run_id, "error", why)
            client.set_tag(run.info.run_id, "killed", "1")
            client.set_terminated(run.info.run_id, status="KILLED")
            reaped.append(run.info.run_id)
        except Exception:   # noqa: BLE001 - another command reaped it at the same moment
            pass
    return reaped


class _Heartbeat:
    """Refreshes a run's ``heartbeat`` tag from a daemon thread (for owners on other hosts)."""

    def __init__(self, client, run_id: str, interval: float = HEARTBEAT_SECONDS):
        import threading
        self.client, self.run_id, self.interval = client, run_id, interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id[:8]}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import time
        while not self.stop_event.wait(self.interval):
            try:
                self.client.set_tag(self.run_id, "heartbeat", str(int(time.time())))
            except Exception:   # noqa: BLE001 - a busy store must never kill the run
                pass

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


def error_message(exc: BaseException) -> str:
    """The ``error`` tag of a failed run: the exception's type and message, bounded."""
    msg = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {msg}"[:4000]


def git_state(root: Path = SOURCE_ROOT) -> tuple[str, bool]:
    """(commit sha or 'unknown', dirty flag) of the harness source tree."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip() or "unknown"
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_reachable(uri: str) -> None:
    """Fail fast with a clear message when a tracking server cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5)
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(f"MLflow tracking server '{uri}' is unreachable ({e}). Start it "
                                "(`mlflow server ...`) or unset MLFLOW_TRACKING_URI to use the workspace "
                                "sqlite store.") from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///"):]).parent
        if not parent.is_dir():
            raise TrackingError(f"tracking URI '{uri}': folder '{parent}' does not exist")


@dataclass
class RunRecord:
    run_id: str
    metrics: dict[str, float]
    tags: dict[str, str]
    reused: bool


def store_init_lock(uri: str):
    """The lock under which a process first touches a sqlite store: MLflow creates and migrates its tables on
    first use, and two processes doing that at once on a new file fail ("table _alembic_tmp_... already
    exists"). Every reader that may meet a new store (workers, pollers) takes it; a server needs none."""
    if not uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock
    return FileLock(uri[len("sqlite:///"):] + ".lock")


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        import mlflow
        check_reachable(uri)
        self.mlflow = mlflow
        self.uri = uri
        with store_init_lock(uri):
            # an explicit client only: mlflow.set_tracking_uri() would export MLFLOW_TRACKING_URI and
            # silently send later runs of this process (another workspace) to this store
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                # a local store keeps artifacts in the workspace; a server decides for itself (its
                # --serve-artifacts root), so every client of the server can read them
                local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
                location = (artifact_root / experiment).resolve().as_uri() if artifact_root and local else None
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        self.experiment = experiment
        self.experiment_id = exp_id
        self.reaped = reap_dead_runs(self.client, [exp_id])

    def find_running(self, config_hash: str) -> str | None:
        """The id of a RUNNING run with this config hash whose owner is alive (any host), or None."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'RUNNING'",
            max_results=20)
        for r in runs:
            if run_is_dead(r.data.tags) is None:
                return r.info.run_id
        return None

    def find_finished(self, config_hash: str) -> RunRecord | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None
        r = runs[0]
        return RunRecord(r.info.run_id, dict(r.data.metrics), dict(r.data.tags), reused=True)

    @contextlib.contextmanager
    def start(self, name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
              config: Mapping[str, Any], parent_run_id: str | None = None) -> Iterator["RunLogger"]:
        sha, dirty = git_state()
        all_tags = {**{k: str(v) for k, v in tags.items()}, "git_sha": sha, "git_dirty": str(dirty),
                    "harness_version": harness.__version__, "command": " ".join(sys.argv)[:4000],
                    **process_tags()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        logger = RunLogger(self.client, run_id)
        beat = _Heartbeat(self.client, run_id)
        monitor = _system_monitor(run_id, self.uri)
        try:
            for k, v in params.items():
                self.client.log_param(run_id, k, str(v)[:6000])
            logger.log_dict(config, "config.json")
            logger.log_dict(package_versions(), "packages.json")
            yield logger
        except BaseException as e:
            beat.stop()
            _stop(monitor)
            pruned = type(e).__name__ == "TrialPruned"   # a sweep stopped this trial early: not a failure
            try:
                if pruned:
                    self.client.set_tag(run_id, "pruned", "1")
                else:
                    self.client.set_tag(run_id, "error", error_message(e))
                    import traceback
                    self.client.log_text(run_id, "".join(traceback.format_exception(e)), "traceback.txt")
                self.client.set_terminated(run_id, status="KILLED" if _interrupted() else "FAILED")
            except Exception:   # noqa: BLE001 - keep the original error; the next command reaps the run
                pass
            raise
        beat.stop()
        _stop(monitor)
        self.client.set_terminated(run_id, status="FINISHED")


SYSTEM_METRICS_SECONDS = 10.0


def _system_monitor(run_id: str, uri: str):
    """MLflow's own system-metrics sampler (CPU, memory, disk, GPU where pynvml finds one) every
    ``SYSTEM_METRICS_SECONDS``: runs shorter than that log none, long ones get their resource curves.
    ``SPATIALBOOST_SYSTEM_METRICS=0`` turns it off."""
    if os.environ.get("SPATIALBOOST_SYSTEM_METRICS", "1") == "0":
        return None
    try:
        import logging
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)   # no start/stop chatter
        mon = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_SECONDS, samples_before_logging=1,
                                   tracking_uri=uri)
        mon.start()
        return mon
    except Exception:   # noqa: BLE001 - monitoring is a convenience; a run never fails for it
        return None


def _stop(monitor) -> None:
    if monitor is not None:
        try:
            monitor.finish()
        except Exception:   # noqa: BLE001
            pass


def _interrupted() -> bool:
    exc = sys.exc_info()[1]
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned"


def _duplicate_dataset(e: Exception) -> bool:
    """A unique-key violation on MLflow's datasets table (PostgreSQL via a server, or SQLite directly)."""
    text = str(e)
    return ("UniqueViolation" in text or "UNIQUE constraint failed" in text or "IntegrityError" in text) \
        and "dataset" in text


class RunLogger:
    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 900):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 900])
        if step is None:
            self.metrics.update({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_dict(self, data: Any, name: str) -> None:
        self.client.log_text(self.run_id, json.dumps(data, indent=1, default=str), name)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_input(self, name: str, digest: str, source: str, context: str = "eval") -> None:
        """The dataset a run read, as an MLflow dataset input (shown in the UI's Datasets column)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        ds = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}))
        inputs = [DatasetInput(ds, [InputTag("mlflow.data.context", context)])]
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, inputs)
                return
            except Exception as e:     # noqa: BLE001 - only the insert race below is retried
                # two runs logging the same new dataset at once (one tracking server, PostgreSQL or SQLite):
                # MLflow looks the dataset up, then inserts it, so the later insert hits the unique key. Again,
                # the lookup finds the other run's row and only links it to this run.
                if attempt == 2 or not _duplicate_dataset(e):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_figure(self, figure: Any, name: str) -> None:
        """A matplotlib figure as an image artifact (``figures/<name>.png``), closed afterwards."""
        import matplotlib.pyplot as plt
        try:
            self.client.log_figure(self.run_id, figure, f"figures/{name}.png")
        finally:
            plt.close(figure)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """One file, or every file of a folder, under ``artifact_path``."""
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
