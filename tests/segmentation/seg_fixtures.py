"""Tiny segmentation datasets written in exactly the ADE20K and Pascal VOC 2012 layouts (never downloaded).

Images are learnable: each class paints its own colour, so a linear head on any features can separate
them; label maps are uint8 class indices (VOC: palette PNGs like the real ``SegmentationClass``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(0, 0, 0), (220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 200, 30), (200, 50, 200),
           (30, 200, 210), (250, 130, 20)]


def scene(rng: np.random.Generator, h: int, w: int, classes: list[int], background: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image [h,w,3] and label map [h,w] with a few class-coloured rectangles on a noisy background."""
    label = np.full((h, w), background, np.uint8)
    for c in rng.choice(classes, size=min(3, len(classes)), replace=False):
        bh, bw = int(rng.integers(h // 4, h // 2 + 1)), int(rng.integers(w // 4, w // 2 + 1))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        label[y:y + bh, x:x + bw] = c
    colours = np.array([PALETTE[(c - 0) % len(PALETTE)] if c != background else (20, 20, 20)
                        for c in range(256)], np.float32)
    img = colours[label] + rng.normal(0, 12, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_ade20k(root: Path, n_train: int = 6, n_val: int = 3, size: tuple[int, int] = (48, 64),
                classes: tuple[int, ...] = (1, 2, 3, 4), seed: int = 0) -> Path:
    """``images/{training,validation}/ADE_*.jpg`` + ``annotations/.../ADE_*.png``; 0 = other."""
    rng = np.random.default_rng(seed)
    for split, tag, n in (("training", "train", n_train), ("validation", "val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, lab = scene(rng, *size, classes=list(classes), background=0)
            name = f"ADE_{tag}_{i + 1:08d}"
            Image.fromarray(img).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(lab).save(root / "annotations" / split / f"{name}.png")
    return root


def voc_palette() -> list[int]:
    pal = []
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def make_voc(root: Path, n_train: int = 6, n_val: int = 3, size: tuple[int, int] = (48, 64),
             classes: tuple[int, ...] = (1, 2, 3), n_aug: int = 0, seed: int = 0) -> Path:
    """``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}``;
    with ``n_aug`` > 0 also ``SegmentationClassAug/`` (grey PNGs) and ``trainaug.txt`` (train + extra)."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / d).mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    k = 0
    for split, n in (("train", n_train), ("val", n_val), ("aug", n_aug)):
        for _ in range(n):
            k += 1
            name = f"2007_{k:06d}"
            img, lab = scene(rng, *size, classes=list(classes), background=0)
            lab[0, :] = 255                         # a void border row, as VOC's outlines
            Image.fromarray(img).save(base / "JPEGImages" / f"{name}.jpg", quality=95)
            if split != "aug":
                p = Image.frombytes("P", (lab.shape[1], lab.shape[0]), np.ascontiguousarray(lab).tobytes())
                p.putpalette(voc_palette())
                p.save(base / "SegmentationClass" / f"{name}.png")
            if n_aug:
                (base / "SegmentationClassAug").mkdir(exist_ok=True)
                Image.fromarray(lab).save(base / "SegmentationClassAug" / f"{name}.png")
            sets[split].append(name)
    d = base / "ImageSets" / "Segmentation"
    (d / "train.txt").write_text("\n".join(sets["train"]) + "\n")
    (d / "val.txt").write_text("\n".join(sets["val"]) + "\n")
    if n_aug:
        (d / "trainaug.txt").write_text("\n".join(sets["train"] + sets["aug"]) + "\n")
    return root
