"""The segmentation run's figure: per-class val IoU of the reported head (cheap, Agg, no pyplot state)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def per_class_iou(iou: Sequence[float | None], floor_iou: Sequence[float | None] | None, title: str):
    """Bars: per-class IoU (%) of the head; classes absent from both prediction and labels (None) get no bar
    and a grey tick; the floor's per-class IoU (majority class) as dots when given; dashed line = mIoU."""
    from matplotlib.figure import Figure
    n = len(iou)
    v = np.array([np.nan if x is None else x for x in iou], dtype=np.float64)
    fig = Figure(figsize=(min(24.0, max(6.0, 0.16 * n + 2)), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, np.nan_to_num(v), color="#5a9a68", width=0.8, label="head")
    if floor_iou is not None:
        f = np.array([np.nan if y is None else y for y in floor_iou], dtype=np.float64)
        ax.plot(x[f > 0], f[f > 0], "k.", ms=4, label="floor (majority class)")
    if np.isfinite(v).any():
        ax.axhline(float(np.nanmean(v)), color="k", ls="--", lw=1, label=f"mIoU {np.nanmean(v):.1f}")
    step = max(1, n // 40)
    ax.set_xticks(x[::step], [str(i) for i in x[::step]], fontsize=6)
    for i in np.flatnonzero(~np.isfinite(v)):
        ax.axvspan(i - 0.4, i + 0.4, color="0.9", zorder=0)
    ax.set_xlim(-1, n)
    ax.set_ylim(0, 100)
    ax.set_xlabel("class index (grey: absent from labels and prediction)")
    ax.set_ylabel("val IoU (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig
