"""The depth run's figure: prediction / ground truth / absolute error of 3 fixed test images for the
reported head (cheap: 3 predictions, Agg, no pyplot state)."""
from __future__ import annotations

import numpy as np
import torch

from suites.depth.metrics import clamp_prediction


def figure_indices(test_idx: np.ndarray, n: int = 3) -> np.ndarray:
    """``n`` evenly spaced test images (the same ones for every encoder of a split)."""
    test_idx = np.asarray(test_idx)
    if len(test_idx) <= n:
        return test_idx
    return test_idx[np.unique(np.linspace(0, len(test_idx) - 1, n).round().astype(np.int64))]


def error_maps(predict, ds, indices: np.ndarray, min_depth: float, max_depth: float, title: str):
    """``predict(sorted indices) -> [1, B, h, w]`` (the reported head) -> a Figure with one row per image:
    prediction and ground truth (same colour scale, m) and |pred - gt| on the evaluated pixels (the metric's
    mask: crop and depth range), prediction resized and clamped as the metric does."""
    import torch.nn.functional as F
    from matplotlib.figure import Figure
    sel = np.sort(np.asarray(indices))
    with torch.no_grad():
        pred = predict(sel).float().cpu()[0]
    fig = Figure(figsize=(10, 2.9 * len(sel)), layout="constrained")
    axes = np.asarray(fig.subplots(len(sel), 3, squeeze=False))
    for r, i in enumerate(sel):
        gt = ds.gt(int(i))
        p = F.interpolate(pred[r][None, None], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
        p = clamp_prediction(p, min_depth, max_depth).numpy()
        valid = ds.eval_mask(int(i), tuple(gt.shape)) & (gt > min_depth) & (gt < max_depth)
        hi = float(np.percentile(gt[valid], 99)) if valid.any() else max_depth
        err = np.where(valid, np.abs(p - gt), np.nan)
        rmse = float(np.sqrt(np.nanmean(err ** 2))) if valid.any() else float("nan")
        emax = max(float(np.nanpercentile(err, 99)), 1e-6) if valid.any() else 1.0
        name = str(ds.samples[int(i)].image)
        for c, (img, label, kw) in enumerate((
                (p, f"prediction  ({name})", {"vmin": 0, "vmax": hi, "cmap": "magma_r"}),
                (np.where(valid, gt, np.nan), "ground truth (evaluated pixels)", {"vmin": 0, "vmax": hi,
                                                                               "cmap": "magma_r"}),
                (err, f"|pred - gt|  (rmse {rmse:.3f} m)", {"vmin": 0, "vmax": emax, "cmap": "viridis"}))):
            ax = axes[r, c]
            im = ax.imshow(img, **kw)
            ax.set_title(label, fontsize=7)
            ax.set_axis_off()
            fig.colorbar(im, ax=ax, shrink=0.8, label="m")
    fig.suptitle(title, fontsize=9)
    return fig
