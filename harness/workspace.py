"""Where runtime data lives: never in the source tree.

``SPATIALBOOST_HOME`` (default ``./workspace``) holds mlflow.db, artifacts/, optuna.db, cache/ (features),
data/ (synthetic datasets), models/ (converted weights) and reports/.

A :class:`Workspace` travels explicitly (``RunContext.workspace``, factory arguments): there is no
process-wide "current" workspace, so two workspaces can be used side by side in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WORLD_ENV = "SPATIALBOOST_WORLD_PRESET"


@dataclass(frozen=True)
class Workspace:
    """Where runtime data lives, and which preset of the embedded synthetic world (``world``) supplies the
    default data of suites run without ``--data`` (``data/world-<preset>`` and its written formats)."""
    root: Path
    world: str = "default"

    def sub(self, name: str) -> Path:
        p = self.root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def cache(self) -> Path:
        return self.sub("cache")

    @property
    def data(self) -> Path:
        return self.sub("data")

    @property
    def models(self) -> Path:
        return self.sub("models")

    @property
    def reports(self) -> Path:
        return self.sub("reports")

    @property
    def artifacts(self) -> Path:
        return self.sub("artifacts")

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def optuna_uri(self) -> str:
        return f"sqlite:///{(self.root / 'optuna.db').resolve()}"


def default_root() -> Path:
    return Path(os.environ.get("SPATIALBOOST_HOME", "workspace")).expanduser().resolve()


def default_world() -> str:
    return os.environ.get(WORLD_ENV) or "default"


def open_workspace(root: str | Path | None = None, world: str | None = None) -> Workspace:
    """The workspace at ``root`` (default ``$SPATIALBOOST_HOME`` or ``./workspace``), created if missing;
    ``world`` defaults to ``$SPATIALBOOST_WORLD_PRESET`` or ``default``."""
    ws = Workspace(Path(root).expanduser().resolve() if root else default_root(), world or default_world())
    ws.root.mkdir(parents=True, exist_ok=True)
    return ws
