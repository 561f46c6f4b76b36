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


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | None = None):
        import mlflow
        from filelock import FileLock
        check_reachable(uri)
        self.mlflow = mlflow
        self.uri = uri
        # parallel workers sharing one sqlite store would race to create its tables and the experiment
        lock = FileLock(uri[len("sqlite:///"):] + ".lock") if uri.startswith("sqlite:///") else contextlib.nullcontext()
        with lock:
            # an explicit client only: mlflow.set_tracking_uri() would export MLFLOW_TRACKING_URI and
            # silently send later runs of this process (another workspace) to this store
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        self.experiment = experiment
        self.experiment_id = exp_id

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
                    "harness_version": harness.__version__, "command": " ".join(sys.argv)[:4000]}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        run_id = run.info.run_id
        logger = RunLogger(self.client, run_id)
        try:
            for k, v in params.items():
                self.client.log_param(run_id, k, str(v)[:6000])
            logger.log_dict(config, "config.json")
            logger.log_dict(package_versions(), "packages.json")
            yield logger
        except BaseException as e:
            if type(e).__name__ == "TrialPruned":      # a sweep stopped this trial early: not a failure
                self.client.set_tag(run_id, "pruned", "1")
            self.client.set_terminated(run_id, status="KILLED" if _interrupted() else "FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")


def _interrupted() -> bool:
    exc = sys.exc_info()[1]
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TrialPruned"


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

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """One file, or every file of a folder, under ``artifact_path``."""
        if Path(path).is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)
