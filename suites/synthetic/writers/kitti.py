"""KITTI Eigen split in the BTS layout (the indoor world scaled to KITTI's depth range)."""

from __future__ import annotations

from pathlib import Path

from . import common
from ..views import load_view


def write_kitti(world_dir, out_root, val_fraction: float = 0.25, depth_scale: float = 8.0,
                missing_gt_every: int = 0, overwrite: bool = False) -> Path:
    """KITTI Eigen split, BTS convention.

    Lists ``ROOT/eigen_train_files_with_gt.txt`` / ``ROOT/eigen_test_files_with_gt.txt`` with
    lines ``<rgb_relpath> <depth_relpath|None> <focal>``; both paths are relative to ROOT
    (so BTS's data_path = gt_path = ROOT). RGB: ``synthetic/synthetic_drive_XXXX_sync/
    image_02/data/XXXXXXXXXX.png``; depth: ``synthetic_drive_XXXX_sync/proj_depth/groundtruth/
    image_02/XXXXXXXXXX.png``, uint16, value/256 = metres, 0 = invalid.

    The indoor world is scaled by ``depth_scale`` (default 8: 0.5-9 m rooms become
    4-72 m, KITTI's 0-80 m range). Scaling the whole world with the same intrinsics
    leaves the image unchanged, so scaled depth is exact for the same RGB.
    ``missing_gt_every=k`` (>0) writes ``None`` for every k-th frame, as KITTI lists do.
    """
    common._check_fraction(val_fraction)
    if not (depth_scale > 0):
        raise ValueError(f"depth_scale must be > 0, got {depth_scale!r}")
    if missing_gt_every < 0:
        raise ValueError(f"missing_gt_every must be >= 0, got {missing_gt_every!r}")
    args = dict(val_fraction=val_fraction, depth_scale=depth_scale, missing_gt_every=missing_gt_every)
    with common._atomic_output(world_dir, out_root, "kitti", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        for ids, list_name in ((train, "eigen_train_files_with_gt.txt"), (val, "eigen_test_files_with_gt.txt")):
            lines = []
            for s in ids:
                drive = f"synthetic_drive_{s:04d}_sync"
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    rgb_rel = f"synthetic/{drive}/image_02/data/{v:010d}.png"
                    common._save_png(tmp / rgb_rel, view.rgb)
                    if missing_gt_every and (v % missing_gt_every == missing_gt_every - 1):
                        dep_rel = "None"
                    else:
                        dep_rel = f"{drive}/proj_depth/groundtruth/image_02/{v:010d}.png"
                        common._save_png(tmp / dep_rel, common._depth_u16(view.depth * depth_scale, 256.0))
                    lines.append(f"{rgb_rel} {dep_rel} {view.K[0, 0]:.4f}")
            (tmp / list_name).write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, test_scenes=val, depth_unit="1/256 m", world_scale=depth_scale)
    return Path(out_root)
