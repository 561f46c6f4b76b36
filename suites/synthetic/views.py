"""Reading a generated world: one view's arrays and annotations (``load_view``), the list of views."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .manifest import _scene_name, read_manifest

__all__ = ["ObjectAnno", "View", "load_view", "list_views", "iter_views"]


@dataclass
class ObjectAnno:
    """One object in one view. Boxes: ``aabb_*`` = {min, max}; ``obb_*`` = {center, size, R}
    (R columns = the box axes in that frame). ``bbox2d`` = [x1, y1, x2, y2] pixel edges
    (x2/y2 exclusive) of the visible mask, None when not visible."""

    instance_id: int
    category: str
    category_id: int
    pixels: int
    bbox2d: list[int] | None
    aabb_world: dict
    obb_world: dict
    aabb_cam: dict
    obb_cam: dict


@dataclass
class View:
    scene_id: int
    view_id: int
    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW metres, 0 = invalid
    instance: np.ndarray  # int32 HxW
    semantic: np.ndarray  # int32 HxW
    K: np.ndarray  # 3x3
    cam_to_world: np.ndarray  # 4x4, OpenCV convention
    objects: list[ObjectAnno] = field(default_factory=list)
    paths: dict = field(default_factory=dict)  # file paths of this view's arrays


def _scene_index(scene_id) -> int:
    if isinstance(scene_id, str):
        s = scene_id.removeprefix("scene_")
        if not s.isdigit():
            raise ValueError(f"bad scene id {scene_id!r}")
        return int(s)
    return int(scene_id)


_SCENE_CACHE: dict = {}


def _scene_meta(world_dir: Path, scene_id) -> dict:
    p = Path(world_dir) / "scenes" / _scene_name(_scene_index(scene_id)) / "scene.json"
    key = (str(p), p.stat().st_mtime_ns if p.exists() else None)
    if key in _SCENE_CACHE:
        return _SCENE_CACHE[key]
    if not p.is_file():
        raise ValueError(f"{p}: scene {scene_id!r} is not in this world (or not finished)")
    meta = json.loads(p.read_text())
    if len(_SCENE_CACHE) > 64:
        _SCENE_CACHE.clear()
    _SCENE_CACHE[key] = meta
    return meta


def _np_box(d: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}


def load_view(world_dir, scene_id, view_id: int, arrays: bool = True) -> View:
    """Read one view. ``arrays=False`` skips the images (annotations only)."""
    from PIL import Image

    world_dir = Path(world_dir)
    meta = _scene_meta(world_dir, scene_id)
    views = meta["views"]
    if not (0 <= int(view_id) < len(views)):
        raise ValueError(f"view {view_id!r} out of range 0..{len(views) - 1} in scene {scene_id!r}")
    vm = views[int(view_id)]
    vd = world_dir / "scenes" / _scene_name(meta["scene_id"]) / f"{int(view_id):03d}"
    paths = {k: vd / n for k, n in (("rgb", "rgb.png"), ("depth", "depth.npy"), ("instance", "instance.png"), ("semantic", "semantic.png"))}
    H, W = meta["image_size"]
    if arrays:
        rgb = np.asarray(Image.open(paths["rgb"]).convert("RGB"))
        depth = np.load(paths["depth"]).astype(np.float32)
        instance = np.asarray(Image.open(paths["instance"])).astype(np.int32)
        semantic = np.asarray(Image.open(paths["semantic"])).astype(np.int32)
    else:
        rgb = np.zeros((0, 0, 3), np.uint8)
        depth = np.zeros((0, 0), np.float32)
        instance = semantic = np.zeros((0, 0), np.int32)
    insts = {d["instance_id"]: d for d in meta["instances"]}
    objects = []
    for o in vm["objects"]:
        w = insts[o["instance_id"]]
        objects.append(
            ObjectAnno(
                instance_id=o["instance_id"],
                category=w["category"],
                category_id=w["category_id"],
                pixels=o["pixels"],
                bbox2d=o["bbox2d"],
                aabb_world=_np_box(w["aabb_world"]),
                obb_world=_np_box(w["obb_world"]),
                aabb_cam=_np_box(o["aabb_cam"]),
                obb_cam=_np_box(o["obb_cam"]),
            )
        )
    return View(
        scene_id=int(meta["scene_id"]),
        view_id=int(view_id),
        rgb=rgb,
        depth=depth,
        instance=instance,
        semantic=semantic,
        K=np.asarray(vm["K"], np.float64),
        cam_to_world=np.asarray(vm["cam_to_world"], np.float64),
        objects=objects,
        paths=paths,
    )


def list_views(world_dir, require_complete: bool = True) -> list[tuple[int, int]]:
    """(scene_id, view_id) of every finished view, in order."""
    world_dir = Path(world_dir)
    m = read_manifest(world_dir)
    if require_complete and not m.get("complete"):
        raise ValueError(f"{world_dir}: world generation is not complete; run generate_world again to finish it")
    out = []
    for d in sorted((world_dir / "scenes").glob("scene_*")):
        if d.is_dir():
            meta = _scene_meta(world_dir, d.name)
            out += [(int(meta["scene_id"]), v) for v in range(len(meta["views"]))]
    return out


def iter_views(world_dir, arrays: bool = True, require_complete: bool = True) -> Iterator[View]:
    for s, v in list_views(world_dir, require_complete):
        yield load_view(world_dir, s, v, arrays=arrays)
