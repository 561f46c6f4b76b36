"""Monocular depth metrics (Eigen et al. 2014 / BTS / DINOv3 ``eval/depth/metrics.py``), streaming.

Convention (fixed here, and the same for every suite and head):

- valid pixel = the benchmark's crop mask (NYU Eigen crop / KITTI Garg crop) AND ``gt > 0`` AND
  ``min_depth < gt < max_depth`` (strict on both sides, as BTS ``eval.py`` and DINOv3, which set ground
  truth ``<= min`` or ``>= max`` to the ignored value);
- predictions are resized bilinearly (align_corners=False) to the ground-truth size, then clamped to
  ``[min_depth, max_depth]`` (NaN / +inf -> max, -inf -> min, as BTS does for inf);
- every metric is computed **per image** over its valid pixels, then averaged over images (DINOv3's
  ``nanmean`` over samples, BTS's mean over frames). Images without a valid pixel are skipped and
  counted (``n_skipped``). This is not the pixel-pooled mean some toolboxes report.

Definitions, with ``g = ln(pred) - ln(gt)`` over the valid pixels of one image::

    rmse     = sqrt(mean((gt - pred)^2))          abs_rel = mean(|gt - pred| / gt)
    sq_rel   = mean((gt - pred)^2 / gt)           mae     = mean(|gt - pred|)
    rmse_log = sqrt(mean(g^2))                    log10   = mean(|log10(gt) - log10(pred)|)
    silog    = 100 * sqrt(mean(g^2) - mean(g)^2)  deltaK  = mean(max(gt/pred, pred/gt) < 1.25^K), K=1,2,3

Deltas are fractions in [0, 1]. Depths are metres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3", "mae")
LOWER_IS_BETTER = {m: not m.startswith("delta") for m in METRICS}


def image_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics. pred [..., B, H, W] (leading dims = heads), gt / valid [B, H, W].

    ``pred`` must already be clamped to a positive range. Returns {name: [..., B]} float64 tensors,
    NaN for an image with no valid pixel."""
    pred = pred.double()
    gt = gt.double()
    v = valid.to(torch.float64)
    n = v.sum((-2, -1))                                     # [B]
    gt1 = torch.where(valid, gt, torch.ones_like(gt))       # avoid 0 / log(0) off the mask
    pred1 = torch.where(valid.expand_as(pred), pred, torch.ones_like(pred))
    err = gt1 - pred1
    g = torch.log(pred1) - torch.log(gt1)
    ratio = torch.maximum(gt1 / pred1, pred1 / gt1)

    def mean(x):
        return (x * v).sum((-2, -1)) / n

    mg = mean(g)
    mg2 = mean(g * g)
    out = {
        "rmse": mean(err * err).sqrt(),
        "abs_rel": mean(err.abs() / gt1),
        "sq_rel": mean(err * err / gt1),
        "rmse_log": mg2.sqrt(),
        "log10": mean(g.abs()) / math.log(10.0),
        "silog": 100.0 * (mg2 - mg * mg).clamp_min(0.0).sqrt(),
        "mae": mean(err.abs()),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = mean((ratio < 1.25 ** k).double())
    return out


def clamp_prediction(pred: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    pred = torch.nan_to_num(pred.float(), nan=max_depth, posinf=max_depth, neginf=min_depth)
    return pred.clamp(min_depth, max_depth)


@dataclass
class DepthMetric:
    """mmengine-style streaming metric: ``process(pred, gt, mask)`` per batch, ``compute()`` at the end.

    ``pred`` may carry leading head dimensions ([K, B, h, w] -> K results at once); ``gt`` [B, H, W] in
    metres (0 = invalid); ``mask`` [B, H, W] bool = the benchmark's crop (None = whole frame)."""
    min_depth: float
    max_depth: float

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
        self._n_pixels: list[np.ndarray] = []

    def valid_mask(self, gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        valid = (gt > 0) & (gt > self.min_depth) & (gt < self.max_depth)
        if mask is not None:
            valid &= mask.to(torch.bool)
        return valid

    def process(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        gt = torch.as_tensor(gt)
        if gt.dim() == 2:
            gt = gt[None]
            pred = pred.unsqueeze(-3)
            mask = None if mask is None else torch.as_tensor(mask)[None]
        if mask is not None:
            mask = torch.as_tensor(mask)
        if tuple(pred.shape[-2:]) != tuple(gt.shape[-2:]):
            lead = pred.shape[:-2]
            pred = F.interpolate(pred.reshape(-1, 1, *pred.shape[-2:]).float(), size=tuple(gt.shape[-2:]),
                                 mode="bilinear", align_corners=False).reshape(*lead, *gt.shape[-2:])
        pred = clamp_prediction(pred, self.min_depth, self.max_depth)
        valid = self.valid_mask(gt, mask)
        vals = image_metrics(pred, gt, valid)
        for k, v in vals.items():
            self._values[k].append(v.cpu().numpy())
        self._n_pixels.append(valid.sum((-2, -1)).cpu().numpy())

    def per_image(self) -> dict[str, np.ndarray]:
        """{name: [..., N]} over all processed images (NaN = skipped)."""
        return {k: np.concatenate(v, axis=-1) if v else np.zeros(0) for k, v in self._values.items()}

    def compute(self) -> dict[str, np.ndarray | float]:
        """Mean over images with at least one valid pixel; plus ``n_images`` and ``n_skipped``."""
        per = self.per_image()
        npx = np.concatenate(self._n_pixels) if self._n_pixels else np.zeros(0)
        ok = npx > 0
        out: dict = {}
        for k, v in per.items():
            m = v[..., ok].mean(-1) if ok.any() else np.full(v.shape[:-1], np.nan)
            out[k] = float(m) if np.ndim(m) == 0 else m
        out["n_images"] = int(ok.sum())
        out["n_skipped"] = int((~ok).sum())
        return out
