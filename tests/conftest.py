import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An isolated workspace (mlflow.db, cache, ...) per test."""
    ws = tmp_path / "ws"
    monkeypatch.setenv("SPATIALBOOST_HOME", str(ws))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from harness.workspace import open_workspace
    open_workspace(ws)
    return ws
