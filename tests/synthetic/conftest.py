"""Fixtures for the synthetic-world tests: one tiny world per session (generated, never downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY = dict(seed=3, num_scenes=3, views_per_scene=2, image_size=(96, 128), min_objects=4, max_objects=7)


@pytest.fixture(scope="session")
def tiny_cfg():
    from suites.synthetic.world import WorldConfig

    return WorldConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_cfg):
    """3 scenes x 2 views at 96x128, generated with 2 spawn workers (exercises the pool)."""
    from suites.synthetic.world import generate_world

    out = tmp_path_factory.mktemp("world") / "tiny"
    generate_world(tiny_cfg, out, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def renderer():
    from suites.synthetic.render import get_renderer

    return get_renderer()
