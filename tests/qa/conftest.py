"""Fixtures for the spatial-QA tests: one small generated world per session."""

from __future__ import annotations

import shutil

import pytest

QA_WORLD = dict(seed=5, num_scenes=3, views_per_scene=9, image_size=(72, 96), min_objects=3, max_objects=6,
                shadows=False, antialias=0)


@pytest.fixture(scope="session")
def qa_world(tmp_path_factory):
    from suites.synthetic.world import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("qaworld") / "w"
    # workers=2: rendering happens in spawned children. (Importing torch._dynamo -- roma does -- in a
    # process that has rendered with MuJoCo EGL segfaults on this machine.)
    generate_world(WorldConfig(**QA_WORLD), out, workers=2, progress=False)
    return out


@pytest.fixture
def world_copy(qa_world, tmp_path):
    """A private copy to damage."""
    dst = tmp_path / "w"
    shutil.copytree(qa_world, dst)
    return dst
