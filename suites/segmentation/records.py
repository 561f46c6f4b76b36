"""Per-image records of a scored segmentation head (``PerSample``), from which its mIoU / aAcc / mAcc and
their paired confidence intervals are recomputed."""
from __future__ import annotations

import numpy as np

from harness.samples import PerSample


def seg_samples(res: dict) -> dict[str, PerSample]:
    """Per-image statistics of one scored head (or the floor): mIoU from per-class intersections and unions
    (reduce 'miou': classes with no union over the resampled images are left out, as mmseg's nanmean over
    classes present in label or prediction), aAcc = correct / labelled pixels (reduce 'ratio'), mAcc from
    per-class correct and labelled pixels (reduce 'miou' over classes present in the labels)."""
    inter, union, label = res["per_image"]
    c = inter.shape[1]
    ids = res["ids"]
    return {
        "mIoU": PerSample(ids, np.hstack([inter, union]), "miou", 100.0,
                          tuple(f"inter.{i}" for i in range(c)) + tuple(f"union.{i}" for i in range(c))),
        "aAcc": PerSample(ids, np.stack([inter.sum(1), label.sum(1)], 1), "ratio", 100.0, ("correct", "labelled")),
        "mAcc": PerSample(ids, np.hstack([inter, label]), "miou", 100.0,
                          tuple(f"correct.{i}" for i in range(c)) + tuple(f"labelled.{i}" for i in range(c))),
    }
