"""Shared image-reading and transform helpers for the suites' dataset readers."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2 as T

from harness.errors import UserError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(UserError, ValueError):
    """Bad dataset input; the message names the file or value."""


def read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image '{path}': {e}") from None


def files_fingerprint(root: Path, rel_paths: Iterable[str], extra: str = "") -> str:
    """sha256 over relative paths and sizes (not contents: a fingerprint must be cheap on ImageNet)."""
    h = hashlib.sha256(extra.encode())
    for rel in rel_paths:
        h.update(rel.encode())
        try:
            h.update(str((root / rel).stat().st_size).encode())
        except OSError:
            raise DataError(f"dataset file '{root / rel}' is missing") from None
    return h.hexdigest()[:16]


_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
           "nearest": T.InterpolationMode.NEAREST}


def eval_transform(info, size: int | None = None, resize_ratio: float = 256 / 224):
    """DINOv2's eval transform: resize the short side to size*256/224, centre crop, normalise."""
    s = size or info.image_size[0]
    tf = T.Compose([T.ToImage(), T.Resize(int(round(s * resize_ratio)), interpolation=_INTERP[info.interpolation],
                                          antialias=True),
                    T.CenterCrop(s), T.ToDtype(torch.float32, scale=True), T.Normalize(info.mean, info.std)])
    return tf, f"eval-resize{int(round(s * resize_ratio))}-crop{s}-{info.interpolation}"


def train_transform(info, size: int | None = None):
    """The paper's augmentation for linear probes: random-resized-crop + horizontal flip."""
    s = size or info.image_size[0]
    return T.Compose([T.ToImage(), T.RandomResizedCrop(s, interpolation=_INTERP[info.interpolation], antialias=True),
                      T.RandomHorizontalFlip(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(info.mean, info.std)])
