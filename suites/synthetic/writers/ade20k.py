"""ADE20K as read by mmseg (semantic ids of categories.py as class indices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .. import categories as C
from ..views import load_view


def write_ade20k(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """ADE20K as read by mmseg: ``images/{training,validation}/ADE_*.jpg`` and
    ``annotations/{training,validation}/ADE_*.png`` (uint8 class index; 0 = other, ignored
    with reduce_zero_label; classes 1..K = the semantic ids of categories.py)."""
    common._check_fraction(val_fraction)
    with common._atomic_output(world_dir, out_root, "ade20k", dict(val_fraction=val_fraction), overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        for split, tag, ids in (("training", "train", train), ("validation", "val", val)):
            k = 0
            for s in ids:
                for v in scenes[s]:
                    k += 1
                    view = load_view(world_dir, s, v)
                    name = f"ADE_{tag}_{k:08d}"
                    common._save_jpg(tmp / "images" / split / f"{name}.jpg", view.rgb)
                    common._save_png(tmp / "annotations" / split / f"{name}.png", view.semantic.astype(np.uint8))
        info.update(classes=list(C.ALL_NAMES), num_classes=C.NUM_CLASSES, ignore_index=0)
    return Path(out_root)
