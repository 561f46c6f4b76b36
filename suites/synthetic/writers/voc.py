"""Pascal VOC 2012 segmentation as read by mmseg (palette PNGs, optional void outline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import common
from .. import categories as C
from ..views import load_view


def _boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a change of label (VOC's 'void' outline)."""
    b = np.zeros(labels.shape, bool)
    b[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    b[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= labels[1:, :] != labels[:-1, :]
    b[:-1, :] |= labels[1:, :] != labels[:-1, :]
    for _ in range(max(0, width - 1)):
        g = b.copy()
        g[1:] |= b[:-1]
        g[:-1] |= b[1:]
        g[:, 1:] |= b[:, :-1]
        g[:, :-1] |= b[:, 1:]
        b = g
    return b


def write_voc(world_dir, out_root, val_fraction: float = 0.25, border: int = 0, overwrite: bool = False) -> Path:
    """Pascal VOC 2012 as read by mmseg: ``VOCdevkit/VOC2012/{JPEGImages/*.jpg,
    SegmentationClass/*.png, SegmentationObject/*.png, ImageSets/Segmentation/{train,val,
    trainval}.txt}``. Class PNGs are palette PNGs: 0 = background (room structure too),
    1..N = object categories (``categories.voc_class_names()``), 255 = ignore on a
    ``border``-pixel outline of objects (0 = no outline)."""
    common._check_fraction(val_fraction)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border!r}")
    args = dict(val_fraction=val_fraction, border=border)
    with common._atomic_output(world_dir, out_root, "voc", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        root = tmp / "VOCdevkit" / "VOC2012"
        pal = C.voc_palette()
        lut = C.voc_lut()
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        sets = {"train": [], "val": []}
        for split, ids in (("train", train), ("val", val)):
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    name = f"synth_{s:05d}_{v:03d}"
                    cls = lut[np.clip(view.semantic, 0, 255)]
                    obj = np.clip(view.instance, 0, 254).astype(np.uint8)
                    if border:
                        edge = _boundary(obj, border)
                        cls = cls.copy()
                        cls[edge] = 255
                        obj = obj.copy()
                        obj[edge] = 255
                    common._save_jpg(root / "JPEGImages" / f"{name}.jpg", view.rgb)
                    common._save_png(root / "SegmentationClass" / f"{name}.png", cls, palette=pal)
                    common._save_png(root / "SegmentationObject" / f"{name}.png", obj, palette=pal)
                    sets[split].append(name)
        d = root / "ImageSets" / "Segmentation"
        d.mkdir(parents=True)
        (d / "train.txt").write_text("\n".join(sets["train"]) + "\n")
        (d / "val.txt").write_text("\n".join(sets["val"]) + "\n")
        (d / "trainval.txt").write_text("\n".join(sets["train"] + sets["val"]) + "\n")
        info.update(classes=list(C.voc_class_names()), num_classes=len(C.voc_class_names()), ignore_index=255)
    return Path(out_root)
