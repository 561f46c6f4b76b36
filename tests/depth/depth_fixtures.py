"""Tiny depth datasets written by the tests in exactly the real on-disk formats (never downloaded).

NYUd v2 (BTS lists): ``nyu_train.txt`` / ``nyu_test.txt`` with ``/scene/rgb_00001.jpg /scene/sync_depth_00001.png
518.8579``; depth 16-bit PNG in millimetres. KITTI Eigen (BTS / toolbox lists): ``kitti_eigen_{train,test}.txt``
with ``2011_09_26/<drive>/image_02/data/0000000005.png <drive>/proj_depth/groundtruth/image_02/0000000005.png
721.5377`` or ``None``; depth 16-bit PNG, value / 256 = metres. Scenes are learnable: the depth of a pixel
follows its colour (a near box on a far, vertically graded background).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def scene(rng: np.random.Generator, hw: tuple[int, int], max_depth: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [H,W,3] and depth float32 [H,W] metres (some 0 = invalid pixels)."""
    h, w = hw
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    far = rng.uniform(0.55, 0.9) * max_depth
    depth = np.broadcast_to(far * (1.0 - 0.5 * rows), (h, w)).astype(np.float32).copy()
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    rgb[..., 2] = (255 * depth / max_depth).astype(np.uint8)
    rgb[..., 1] = 40
    bh, bw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    near = rng.uniform(0.1, 0.3) * max_depth
    depth[y:y + bh, x:x + bw] = near
    rgb[y:y + bh, x:x + bw] = (230, 60, int(255 * near / max_depth))
    holes = rng.random((h, w)) < 0.03
    depth[holes] = 0.0
    return rgb, depth


def write_depth_png(path: Path, depth_m: np.ndarray, scale: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(depth_m * scale).astype(np.uint16)).save(path)


def make_nyud(root: Path, n_train: int = 12, n_test: int = 4, hw: tuple[int, int] = (48, 64), seed: int = 0,
              n_scenes: int = 4) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = {"train": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            rgb, depth = scene(rng, hw, 10.0)
            if split == "train":
                folder = f"scene_{i % n_scenes:04d}"
                img, dep = f"{folder}/rgb_{i:05d}.jpg", f"{folder}/sync_depth_{i:05d}.png"
                lines[split].append(f"/{img} /{dep} 518.8579")      # BTS train list: leading slash
            else:
                img, dep = f"test/rgb_{i:05d}.jpg", f"test/sync_depth_{i:05d}.png"
                lines[split].append(f"{img} {dep} 518.8579")
            (root / img).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / img, quality=95)
            write_depth_png(root / dep, depth, 1000.0)
    (root / "nyu_train.txt").write_text("\n".join(lines["train"]) + "\n")
    (root / "nyu_test.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


def make_kitti(root: Path, n_train: int = 6, n_test: int = 4, hw: tuple[int, int] = (40, 128), seed: int = 0,
               rgb_dir: str = "", depth_dir: str = "", no_gt: tuple[int, ...] = (1,),
               list_name: str = "kitti_eigen_{split}.txt") -> Path:
    """``no_gt``: test indices written with depth path ``None``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rgb_root = root / rgb_dir if rgb_dir else root
    dep_root = root / depth_dir if depth_dir else root
    for split, n in (("train", n_train), ("test", n_test)):
        lines = []
        for i in range(n):
            drive = f"2011_09_26_drive_{(i % 3) + 1:04d}_sync"
            img = f"2011_09_26/{drive}/image_02/data/{split}{i:09d}.png"
            dep = f"{drive}/proj_depth/groundtruth/image_02/{split}{i:09d}.png"
            rgb, depth = scene(rng, hw, 80.0)
            (rgb_root / img).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(rgb_root / img)
            if split == "test" and i in no_gt:
                lines.append(f"{img} None 721.5377")
            else:
                write_depth_png(dep_root / dep, depth, 256.0)
                lines.append(f"{img} {dep} 721.5377")
        (root / list_name.format(split=split)).write_text("\n".join(lines) + "\n")
    return root
