"""Fixtures for the spatial-QA tests: one small generated world per session, and the same world written in
ScanNet's format (what the generator reads)."""

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


@pytest.fixture(scope="session")
def qa_scannet(qa_world, tmp_path_factory):
    """The world in ScanNet's layout (scannet_2d/ with instance-filt/, label-filt/, aggregation, label map)."""
    from suites.synthetic.writers import write_scannet

    return write_scannet(qa_world, tmp_path_factory.mktemp("qascannet") / "scannet", val_fraction=0.34)


@pytest.fixture
def scannet_copy(qa_scannet, tmp_path):
    """A private copy to damage."""
    dst = tmp_path / "scannet"
    shutil.copytree(qa_scannet, dst)
    return dst


def world_view(world, key: str, arrays: bool = True):
    """The world's ground truth of a ScanNet view key ``sceneSSSS_00/V``."""
    from suites.synthetic.world import load_view

    scene, frame = key.split("/")
    return load_view(world, int(scene[len("scene"):len("scene") + 4]), int(frame), arrays=arrays)
