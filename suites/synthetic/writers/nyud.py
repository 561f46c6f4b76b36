"""NYU Depth v2 in the BTS layout (DINOv3's ``NYU`` reader)."""

from __future__ import annotations

from pathlib import Path

from . import common
from ..views import load_view


def write_nyud(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """NYU Depth v2, BTS convention (DINOv3 ``NYU`` reader).

    ``ROOT/nyu_train.txt`` and ``ROOT/nyu_test.txt`` with lines
    ``<split>/<scene>/rgb_XXXXX.jpg <split>/<scene>/sync_depth_XXXXX.png <focal>``
    (paths relative to ROOT); depth = uint16 PNG in millimetres, 0 = no measurement.
    """
    common._check_fraction(val_fraction)
    args = dict(val_fraction=val_fraction)
    with common._atomic_output(world_dir, out_root, "nyud", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        for split, ids, list_name in (("train", train, "nyu_train.txt"), ("test", val, "nyu_test.txt")):
            lines = []
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    rel = f"{split}/scene_{s:05d}"
                    img = f"{rel}/rgb_{v:05d}.jpg"
                    dep = f"{rel}/sync_depth_{v:05d}.png"
                    common._save_jpg(tmp / img, view.rgb)
                    common._save_png(tmp / dep, common._depth_u16(view.depth, 1000.0))
                    lines.append(f"{img} {dep} {view.K[0, 0]:.4f}")
            (tmp / list_name).write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, test_scenes=val, depth_unit="mm", depth_scale=1000.0)
    return Path(out_root)
