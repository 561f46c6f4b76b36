"""What every retrieval reader shares: the format error, a lazy image list with a stable fingerprint,
tolerant RGB loading and query cropping.

Images are opened lazily; lists follow the torch Dataset protocol and the feature cache's
``FeatureDataset`` (``fingerprint()``, ``transform_id``).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageFile

from suites.images import DataError

__all__ = ["DatasetFormatError", "ImageRecord", "ImageListDataset", "load_rgb"]


class DatasetFormatError(DataError):
    """The on-disk data does not match the expected layout; the message names the file and the problem.
    (A ``suites.images.DataError``, so the CLI reports it as bad input.)"""


def _few(items: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(str(x) for x in list(items)[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")



def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB. A truncated file is read as far as it goes, with a warning (revisitop's
    loader does the same, globally); the PIL flag is set only for that one read."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError) as e:
        if "truncated" not in str(e).lower():
            raise DatasetFormatError(f"cannot read image {path}: {e}") from None
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, SyntaxError) as e:
        raise DatasetFormatError(f"cannot read image {path}: {e}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    warnings.warn(f"image {path} is truncated; read what is there")
    return img


@dataclass(frozen=True)
class ImageRecord:
    relpath: str                                            # relative to the dataset's image root, '/'
    label: Any = None                                       # class id / place id / None
    bbox: tuple[float, float, float, float] | None = None   # crop (x0, y0, x1, y1) in pixels
    name: str = ""                                          # id in the ground truth (for messages)


def _stat_sizes(root: Path, relpaths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    sizes = np.empty(len(relpaths), dtype=np.int64)
    missing = []
    for i, rp in enumerate(relpaths):
        try:
            st = os.stat(root / rp)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            sizes[i] = -1
            missing.append(rp)
        else:
            sizes[i] = st.st_size
    return sizes, missing


def _crop(img: Image.Image, bbox, what: str) -> Image.Image:
    """Crop like revisitop's ``pil_loader(...).crop(bbx)`` (PIL rounds the box), but clipped to the image
    as the MATLAB reference ``crop_qim`` does (PIL would pad outside pixels with black)."""
    w, h = img.size
    x0, y0, x1, y1 = bbox
    box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
    r = tuple(int(round(v)) for v in box)
    if r[2] <= r[0] or r[3] <= r[1]:
        raise DatasetFormatError(f"{what}: box {tuple(bbox)} leaves nothing of the {w}x{h} image")
    return img.crop(r)


class ImageListDataset:
    """Lazy list of images: ``ds[i] -> (transform(image) or PIL image, i)``.

    The index is the target so that features line up with ground-truth indices. ``transform_id``
    names the preprocessing for the feature-cache key. ``fingerprint()`` = sha256 of relative paths,
    file sizes, labels, boxes and ``extra`` (e.g. the ground-truth digest).
    """

    def __init__(self, root: str | Path, records: Sequence[ImageRecord], *, transform: Callable | None = None,
                 transform_id: str = "pil", extra: str = "", sizes: np.ndarray | None = None,
                 split: str = ""):
        self.root = Path(root)
        self.records = list(records)
        self.transform = transform
        self.transform_id = transform_id
        self.extra = extra
        self.split = split
        self._sizes = sizes
        self._fp: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        path = self.root / rec.relpath
        img = load_rgb(path)
        if rec.bbox is not None:
            img = _crop(img, rec.bbox, f"{path} (query '{rec.name or rec.relpath}')")
        if self.transform is not None:
            img = self.transform(img)
        return img, i

    @property
    def labels(self) -> list:
        return [r.label for r in self.records]

    @property
    def paths(self) -> list[Path]:
        return [self.root / r.relpath for r in self.records]

    def with_transform(self, transform: Callable | None, transform_id: str) -> "ImageListDataset":
        """Same images, another preprocessing (shares records and the computed sizes)."""
        ds = ImageListDataset(self.root, self.records, transform=transform, transform_id=transform_id,
                              extra=self.extra, sizes=self._sizes, split=self.split)
        ds._fp = self._fp
        return ds

    def sizes(self) -> np.ndarray:
        if self._sizes is None:
            sizes, missing = _stat_sizes(self.root, [r.relpath for r in self.records])
            if missing:
                raise DatasetFormatError(f"{self.root}: {len(missing)} listed image(s) are missing: {_few(missing)}")
            self._sizes = sizes
        return self._sizes

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256()
            h.update(f"split={self.split}\nextra={self.extra}\n".encode())
            for rec, size in zip(self.records, self.sizes()):
                h.update(json.dumps([rec.relpath, int(size), rec.label, rec.bbox]).encode())
                h.update(b"\n")
            self._fp = h.hexdigest()[:16]
        return self._fp

