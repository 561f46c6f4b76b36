"""Where runtime data lives: never in the source tree.

``SPATIALBOOST_HOME`` (default ``./workspace``) holds mlflow.db, artifacts/, optuna.db, cache/ (features),
data/ (synthetic datasets), models/ (converted weights) and reports/.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_current: "Workspace | None" = None


@dataclass(frozen=True)
class Workspace:
    root: Path

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


def use_workspace(root: str | Path | None = None) -> Workspace:
    """Select (and create) the workspace for this process."""
    global _current
    ws = Workspace(Path(root).expanduser().resolve() if root else default_root())
    ws.root.mkdir(parents=True, exist_ok=True)
    _current = ws
    return ws


def current() -> Workspace:
    return _current or use_workspace()
