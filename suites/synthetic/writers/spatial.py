"""Per-view records (jsonl + PNGs) with exact boxes: the synthetic world's own annotation format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import common
from ..views import load_view


def write_spatial_annotations(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """Per-view records for the spatial-QA generator: ``ROOT/annotations.jsonl`` (one JSON
    object per view) and ``ROOT/images/<scene>/<view>_{rgb.png,depth.png,instance.png}``.

    Each record: id, scene, view, split, rgb/depth/instance paths (relative to ROOT),
    depth_scale (1000: uint16 mm), K, cam_to_world (OpenCV axes), image_size (H, W),
    world_up ([0,0,1]; floor plane z = 0), and objects [{instance_id (= value in the
    instance PNG), category, category_id, pixels, bbox2d, aabb_world, obb_world,
    aabb_cam, obb_cam}] for every object of the scene (pixels = 0 when not visible).
    """
    common._check_fraction(val_fraction)
    with common._atomic_output(world_dir, out_root, "spatial", dict(val_fraction=val_fraction), overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        split_of = {s: "train" for s in train}
        split_of.update({s: "val" for s in val})
        lines = []
        for s in sorted(scenes):
            for v in scenes[s]:
                view = load_view(world_dir, s, v)
                base = f"images/scene_{s:05d}/{v:03d}"
                common._save_png(tmp / f"{base}_rgb.png", view.rgb)
                common._save_png(tmp / f"{base}_depth.png", common._depth_u16(view.depth, 1000.0))
                common._save_png(tmp / f"{base}_instance.png", view.instance.astype(np.uint16))
                rec = {
                    "id": f"scene_{s:05d}/{v:03d}",
                    "scene": s,
                    "view": v,
                    "split": split_of[s] if len(scenes) > 1 else "train",
                    "rgb": f"{base}_rgb.png",
                    "depth": f"{base}_depth.png",
                    "depth_scale": 1000.0,
                    "instance": f"{base}_instance.png",
                    "K": view.K.tolist(),
                    "cam_to_world": view.cam_to_world.tolist(),
                    "image_size": list(view.rgb.shape[:2]),
                    "world_up": [0.0, 0.0, 1.0],
                    "floor_height": 0.0,
                    "objects": [
                        {
                            "instance_id": o.instance_id,
                            "category": o.category,
                            "category_id": o.category_id,
                            "pixels": o.pixels,
                            "bbox2d": o.bbox2d,
                            "aabb_world": {k: x.tolist() for k, x in o.aabb_world.items()},
                            "obb_world": {k: x.tolist() for k, x in o.obb_world.items()},
                            "aabb_cam": {k: x.tolist() for k, x in o.aabb_cam.items()},
                            "obb_cam": {k: x.tolist() for k, x in o.obb_cam.items()},
                        }
                        for o in view.objects
                    ],
                }
                lines.append(json.dumps(rec))
        (tmp / "annotations.jsonl").write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, val_scenes=val, records=len(lines))
    return Path(out_root)
