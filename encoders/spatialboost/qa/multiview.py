"""View pairs by perceptual distance (App. C, Eq. 2) and their extension to 4 / 8 views (App. D).

The paper keeps pairs with ``0.35 <= LPIPS <= 0.65``. LPIPS needs pretrained AlexNet/VGG weights
(torchvision downloads them); when the ``lpips`` package *and* its backbone weights are already
on the machine, ``metric="lpips"`` (and ``auto``) uses it. Otherwise ``auto`` falls back to
``ssim`` = 1 - SSIM of 64x64 grey images (scikit-image), whose window is recalibrated (see
options.DEFAULT_WINDOWS and the README). ``pose`` is a geometric alternative (rotation angle +
baseline, needs poses). Any callable ``(rgb1, rgb2) -> float`` can be plugged in.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .options import DEFAULT_WINDOWS

__all__ = ["PerceptualMetric", "lpips_available", "make_metric", "select_pairs", "extend_views", "ssim_distance"]

PerceptualMetric = Callable[[np.ndarray, np.ndarray], float]


def _gray64(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(rgb, np.uint8)).convert("L").resize((64, 64), Image.BILINEAR),
                      np.float64) / 255.0


def ssim_distance(rgb1: np.ndarray, rgb2: np.ndarray) -> float:
    """1 - SSIM on 64x64 grey versions (skimage ``structural_similarity``), in [0, 2] (≈[0, 1])."""
    from skimage.metrics import structural_similarity

    return float(1.0 - structural_similarity(_gray64(rgb1), _gray64(rgb2), data_range=1.0))


def lpips_available() -> bool:
    """True when ``lpips`` imports and its AlexNet backbone weights are cached (no download)."""
    try:
        import importlib.util
        import os

        import torch

        if importlib.util.find_spec("lpips") is None:
            return False
        ck = os.path.join(torch.hub.get_dir(), "checkpoints")
        return os.path.isdir(ck) and any(f.startswith("alexnet") for f in os.listdir(ck))
    except Exception:  # noqa: BLE001
        return False


class _LPIPS:
    def __init__(self):
        import lpips  # type: ignore

        self.net = lpips.LPIPS(net="alex", verbose=False).eval()

    def __call__(self, a, b) -> float:
        import torch

        def t(x):
            return torch.from_numpy(np.asarray(x, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

        with torch.no_grad():
            return float(self.net(t(a), t(b)).item())


def make_metric(name: str) -> tuple[str, PerceptualMetric | None, tuple[float, float]]:
    """-> (resolved name, image metric or None for 'pose', default window)."""
    if name == "auto":
        name = "lpips" if lpips_available() else "ssim"
    if name == "lpips":
        if not lpips_available():
            raise ValueError("metric 'lpips' needs the lpips package and cached AlexNet weights "
                             "(torch hub checkpoints); use metric='ssim' or 'pose' instead")
        return name, _LPIPS(), DEFAULT_WINDOWS["lpips"]
    if name == "ssim":
        return name, ssim_distance, DEFAULT_WINDOWS["ssim"]
    if name == "pose":
        return name, None, DEFAULT_WINDOWS["pose"]
    raise ValueError(f"unknown perceptual metric {name!r}")


def select_pairs(keys: list[str], distance: Callable[[int, int], float], window: tuple[float, float]):
    """All pairs (i < j) with ``window[0] <= d <= window[1]``; returns ([(i, j, d)], all distances)."""
    lo, hi = window
    pairs, alld = [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            d = float(distance(i, j))
            alld.append(d)
            if lo <= d <= hi:
                pairs.append((i, j, d))
    return pairs, alld


def extend_views(pair: tuple[int, int], n_views: int, candidates: list[int], poses: list, visible: list[set],
                 required: set) -> list[int] | None:
    """Extend an anchor pair to ``n_views``: add the views whose camera centres lie closest to the
    segment between the anchors ("interpolated" views), and accept them when the objects the QA
    is about (``required``) are visible in more than half of the added views (the paper checks
    the anchor QA against the new views with GPT-4o). None when it cannot be done."""
    i, j = pair
    need = n_views - 2
    rest = [c for c in candidates if c not in (i, j)]
    if len(rest) < need:
        return None
    a, b = poses[i][:3, 3], poses[j][:3, 3]
    ab = b - a

    def seg_dist(c):
        p = poses[c][:3, 3]
        t = np.clip(((p - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        return float(np.linalg.norm(p - (a + t * ab)))

    add = sorted(rest, key=lambda c: (seg_dist(c), c))[:need]
    ok = sum(1 for c in add if required <= visible[c])
    if ok * 2 <= len(add):
        return None
    return [i, j] + add
