"""Retrieval preprocessing (paper App. A.7): a fixed square for Oxford, Paris and AmsterTime, each side
to the nearest multiple of the patch size for Met."""
from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image

__all__ = ["make_transform", "RetrievalTransform", "patch_multiple_size"]


def patch_multiple_size(width: int, height: int, patch: int) -> tuple[int, int]:
    """Nearest multiple of ``patch`` per side (at least one patch): Met keeps each image's resolution."""
    return (max(patch, int(round(width / patch)) * patch), max(patch, int(round(height / patch)) * patch))


class RetrievalTransform:
    """PIL image -> normalised float tensor [3, H, W] (a class, not a closure, so DataLoader workers
    started with 'spawn' can pickle it)."""

    def __init__(self, image_size: tuple[int, int] | None, mean: Sequence[float], std: Sequence[float],
                 patch_size: int | None, interpolation: str):
        self.image_size = image_size          # (h, w) or None = nearest multiple of patch_size
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        self.patch_size = patch_size
        self.interpolation = interpolation

    def __call__(self, img: Image.Image):
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        if self.image_size is None:
            w, h = patch_multiple_size(img.width, img.height, int(self.patch_size))  # type: ignore[arg-type]
        else:
            h, w = self.image_size
        if (w, h) != img.size:
            img = TF.resize(img, [h, w], interpolation=InterpolationMode(self.interpolation), antialias=True)
        x = TF.pil_to_tensor(img).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def make_transform(image_size: int | tuple[int, int] | None, mean: Sequence[float], std: Sequence[float], *,
                   patch_size: int | None = None, interpolation: str = "bicubic") -> tuple[Callable, str]:
    """PIL image -> normalised float tensor [3, H, W]; returns (transform, transform_id).

    image_size=224 -> resized to 224x224 (the whole image, aspect ratio not kept, so no query content
    is cropped away); None -> each side to the nearest multiple of ``patch_size`` (Met protocol; such
    images differ in size, so batch them one by one).
    """
    if image_size is None:
        if not patch_size:
            raise ValueError("image_size=None (nearest multiple of the patch size) needs patch_size")
        size = None
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    tf = RetrievalTransform(size, mean, std, patch_size, interpolation)
    size_id = f"patchmult{patch_size}" if size is None else f"{size[0]}x{size[1]}"
    tid = f"retrieval:{size_id}:{interpolation}:mean={list(tf.mean)}:std={list(tf.std)}"
    return tf, tid
