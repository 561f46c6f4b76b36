"""ImageNet-style class folders of object crops (for the classification suite)."""

from __future__ import annotations

from pathlib import Path

from . import common
from ..views import load_view


def write_imagefolder(world_dir, out_root, val_fraction: float = 0.25, min_pixels: int = 400,
                      margin: float = 0.15, crop_size: int | None = None, overwrite: bool = False) -> Path:
    """Object-centric crops: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``.

    One square crop per visible object with at least ``min_pixels`` visible pixels, around
    its visible 2D box grown by ``margin``; ``crop_size`` resizes crops (None keeps them).
    Only classes that have crops in *both* splits are written, so class indices agree
    between train and val (the dropped classes are listed in the stamp file).
    """
    from PIL import Image

    common._check_fraction(val_fraction)
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels!r}")
    if crop_size is not None and crop_size < 8:
        raise ValueError(f"crop_size must be >= 8 or None, got {crop_size!r}")
    args = dict(val_fraction=val_fraction, min_pixels=min_pixels, margin=margin, crop_size=crop_size)
    with common._atomic_output(world_dir, out_root, "imagefolder", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        crops: dict[str, list] = {"train": [], "val": []}
        for split, ids in (("train", train), ("val", val)):
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    H, W = view.rgb.shape[:2]
                    for o in view.objects:
                        if o.pixels < min_pixels or o.bbox2d is None:
                            continue
                        x1, y1, x2, y2 = o.bbox2d
                        side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
                        side = int(min(max(side, 8), H, W))
                        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                        a = int(round(min(max(cx - side / 2, 0), W - side)))
                        b = int(round(min(max(cy - side / 2, 0), H - side)))
                        crop = view.rgb[b : b + side, a : a + side]
                        crops[split].append((o.category, f"s{s:05d}_v{v:03d}_i{o.instance_id:02d}", crop))
        cls_train = {c for c, _, _ in crops["train"]}
        cls_val = {c for c, _, _ in crops["val"]}
        keep = sorted(cls_train & cls_val)
        if not keep:
            raise ValueError(
                "no category has object crops in both splits; generate more scenes/views or lower min_pixels"
            )
        for split in ("train", "val"):
            for cat, name, crop in crops[split]:
                if cat not in keep:
                    continue
                im = Image.fromarray(crop)
                if crop_size:
                    im = im.resize((crop_size, crop_size), Image.BILINEAR)
                p = tmp / split / cat / f"{name}.JPEG"
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p, format="JPEG", quality=common.JPEG_QUALITY)
        info.update(classes=keep, dropped_classes=sorted((cls_train | cls_val) - set(keep)))
    return Path(out_root)
