"""Fast mode: fixed training crops whose encoder features go through the harness FeatureCache.

Each training image is resized as at test time (keep ratio, short side ``scale``, mmseg ``Resize``) and
cut into the slide-inference windows (``crop``/``stride``); a window smaller than the crop (image smaller
than the crop) is padded to crop x crop like mmseg's ``SegDataPreProcessor`` does at training (image 0
after normalisation, label 255), then centre-padded to the patch size like the ``HarnessEncoder``
backbone. No random resize, crop, flip or photometric distortion: that is what ``exact`` mode is for.

Labels of all windows are written once to a uint8 ``.npy`` next to the feature caches (atomically, keyed
like the features), so training reads them by index.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness.atomic import atomic_file
from suites.images import DataError
from suites.segmentation.datasets import SegSplit
from suites.segmentation.mmseg_compat import center_pad
from suites.segmentation.protocol import HeadGeometry, load_pipeline, window_boxes

_SWAP_ORIENTATIONS = (5, 6, 7, 8)   # EXIF orientations that transpose the image (cv2 applies them)


def decoded_size(path: Path) -> tuple[int, int]:
    """(w, h) of the image as mmcv's cv2 loader returns it (EXIF orientation applied), from the header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
    except OSError as e:
        raise DataError(f"cannot read image '{path}': {e}") from None
    return (h, w) if orient in _SWAP_ORIENTATIONS else (w, h)


def normalize_bgr(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """HWC uint8 BGR (mmcv) -> CHW float RGB normalised exactly as SegDataPreProcessor (0-255 mean/std)."""
    x = torch.from_numpy(np.ascontiguousarray(img[..., ::-1])).permute(2, 0, 1).float()
    m = torch.tensor([v * 255 for v in mean]).view(3, 1, 1)
    s = torch.tensor([v * 255 for v in std]).view(3, 1, 1)
    return (x - m) / s


class WindowSet(torch.utils.data.Dataset):
    """Items ``(image tensor [3, Hp, Wp], window index)`` for ``FeatureCache``; ``labels()`` for training."""

    def __init__(self, split: SegSplit, indices: Sequence[int], geo: HeadGeometry, info):
        from mmcv.image.geometric import rescale_size
        self.split, self.indices, self.geo, self.info = split, list(indices), geo, info
        self.dataset = split.build(load_pipeline(split.num_classes, split.dataset, geo.scale_wh),
                                   indices=self.indices, test_mode=True)
        self.index: list[tuple[int, tuple[int, int, int, int]]] = []
        self.sizes: list[tuple[int, int]] = []
        for i, k in enumerate(self.indices):
            w, h = rescale_size(decoded_size(split.root / split.items[k][0]), geo.scale_wh)
            self.sizes.append((h, w))
            self.index += [(i, box) for box in window_boxes(h, w, geo.crop, geo.stride)]
        self.transform_id = (f"{geo.transform_id()}-windows-p{info.patch_size}-"
                             f"mean{','.join(f'{v:.5f}' for v in info.mean)}-std{','.join(f'{v:.5f}' for v in info.std)}")
        h = hashlib.sha256(json.dumps([split.fingerprint(), self.indices]).encode())
        self._fp = h.hexdigest()[:16]
        self._memo: tuple[int, dict] | None = None

    def fingerprint(self) -> str:
        return self._fp

    def __len__(self) -> int:
        return len(self.index)

    def _load(self, i: int) -> dict:
        if self._memo is None or self._memo[0] != i:
            res = self.dataset[i]
            if tuple(res["img"].shape[:2]) != self.sizes[i]:
                raise DataError(f"image '{res['img_path']}' decodes to {res['img'].shape[:2]}, expected "
                                f"{self.sizes[i]} from its header; use mode=exact for this dataset")
            self._memo = (i, res)
        return self._memo[1]

    def window(self, j: int) -> tuple[torch.Tensor, np.ndarray]:
        i, (y1, y2, x1, x2) = self.index[j]
        res = self._load(i)
        c = self.geo.crop
        img = normalize_bgr(res["img"][y1:y2, x1:x2], self.info.mean, self.info.std)
        lab = np.full((c, c), 255, np.uint8)
        lab[:y2 - y1, :x2 - x1] = res["gt_seg_map"][y1:y2, x1:x2]
        img = F.pad(img, (0, c - (x2 - x1), 0, c - (y2 - y1)))
        return center_pad(img, self.info.patch_size), lab

    def __getitem__(self, j: int):
        return self.window(j)[0], j

    def labels(self, cache_root: Path, key: str) -> np.ndarray:
        """uint8 [N, crop, crop] label windows, written once (``harness.atomic``: temp + rename) under
        ``cache_root``."""
        final = Path(cache_root) / f"seg-labels-{key}.npy"
        if final.is_file():
            return np.load(final, mmap_mode="r")
        with atomic_file(final) as tmp:      # open_memmap writes to the path as given (no .npy appended)
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(self), self.geo.crop, self.geo.crop))
            for j in range(len(self)):
                arr[j] = self.window(j)[1]
            arr.flush()
            del arr
        return np.load(final, mmap_mode="r")


def labels_key(features_key: str, ws: WindowSet) -> str:
    return hashlib.sha256(f"{features_key}|{ws.fingerprint()}|{ws.transform_id}".encode()).hexdigest()[:24]

