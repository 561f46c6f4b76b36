"""The embedded default: the synthetic world, generated once per preset and written lazily into each
benchmark's native layout inside the workspace, so suites read it with their real readers.

``spatialboost eval --suite X`` without ``--data`` uses the preset the workspace names
(``Workspace.world``: ``--world``, ``$SPATIALBOOST_WORLD_PRESET`` or ``default``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from suites.synthetic.world import WorldConfig, generate_world

PRESETS: dict[str, WorldConfig] = {
    # tests and `spatialboost demo --preset tiny`: seconds to render
    "tiny": WorldConfig(seed=0, num_scenes=6, views_per_scene=4, image_size=(96, 128), min_objects=3,
                        max_objects=6, shadows=False, antialias=0),
    # `spatialboost demo`: a few minutes on 2 cores
    "default": WorldConfig(seed=0, num_scenes=24, views_per_scene=6, image_size=(240, 320), shadows=True),
    # the VQA signal runs (suites/vqa/README.md): 960 views, 10x the default's, so the VLM and the readout see
    # ~7k relative-depth questions; a GPU preset for the VLM, minutes to render on 2 cores
    "vqa": WorldConfig(seed=7, num_scenes=120, views_per_scene=8, image_size=(180, 240), shadows=True),
}


def preset_config(name: str) -> WorldConfig:
    if name not in PRESETS:
        from harness.errors import UserError
        raise UserError(f"unknown world preset '{name}'; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def world_dir(workspace, preset: str | None = None, progress: bool = True) -> Path:
    """Generate (or resume) the world of ``preset`` (default: the workspace's) in
    ``workspace/data/world-<preset>``."""
    name = preset or workspace.world
    cfg = preset_config(name)
    out = Path(workspace.data) / f"world-{name}"
    # always render in worker processes: a process that rendered with EGL and later imports torch._dynamo
    # (roma, the trainer) can crash, and workers keep the GL contexts out of the harness process
    return Path(generate_world(cfg, out, workers=2, progress=progress))


def _formatted(workspace, fmt: str, write: Callable[[Path, Path], Path]) -> Path:
    out = Path(workspace.data) / f"{fmt}-{workspace.world}"
    if not out.exists():
        write(world_dir(workspace), out)
    return out


def imagefolder_root(workspace) -> Path:
    from suites.synthetic.writers import write_imagefolder
    return _formatted(workspace, "imagefolder", write_imagefolder)


def nyud_root(workspace) -> Path:
    from suites.synthetic.writers import write_nyud
    return _formatted(workspace, "nyud", write_nyud)


def kitti_root(workspace) -> Path:
    from suites.synthetic.writers import write_kitti
    return _formatted(workspace, "kitti", write_kitti)


def ade20k_root(workspace) -> Path:
    from suites.synthetic.writers import write_ade20k
    return _formatted(workspace, "ade20k", write_ade20k)


def voc_root(workspace) -> Path:
    from suites.synthetic.writers import write_voc
    return _formatted(workspace, "voc", write_voc)


def roxford_root(workspace) -> Path:
    from suites.synthetic.writers import write_roxford
    return _formatted(workspace, "roxford", write_roxford)


def scannet_root(workspace) -> Path:
    """The world in ScanNet's layout. An output of the first layout (before instance-filt/, label-filt/,
    aggregation.json and the label map the QA generator reads; it has no label map) is rewritten in place."""
    from suites.synthetic.writers import write_scannet
    from suites.synthetic.writers.scannet import LABEL_MAP
    out = Path(workspace.data) / f"scannet-{workspace.world}"
    if out.is_dir() and not (out / LABEL_MAP).is_file():
        write_scannet(world_dir(workspace), out, overwrite=True)
    return _formatted(workspace, "scannet", write_scannet)


def spatial_annotations_root(workspace) -> Path:
    from suites.synthetic.writers import write_spatial_annotations
    return _formatted(workspace, "spatial", write_spatial_annotations)


def rparis_root(workspace) -> Path:
    """The revisited writer under the Paris ground-truth name, with its own landmarks: the world's last
    half of scenes are Paris's landmarks (Oxford's are the first half), the rest are distractors."""
    from suites.synthetic.writers import write_roxford
    return _formatted(workspace, "rparis-v2",
                      lambda world, out: write_roxford(world, out, name="rparis6k", landmarks="last"))
