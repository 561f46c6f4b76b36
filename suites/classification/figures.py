"""The classification run's figure: per-class top-1 accuracy of the reported head on val (cheap, Agg)."""
from __future__ import annotations

import numpy as np


def per_class_accuracy(hits: np.ndarray, labels: np.ndarray, classes: list[str], title: str):
    """Bar chart of per-class top-1 (%) from per-image correctness ``hits`` [N] and ``labels`` [N]; the
    dashed line is the overall top-1. A matplotlib ``Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure
    n = len(classes)
    hits, labels = np.asarray(hits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    count = np.bincount(labels, minlength=n).astype(np.float64)
    acc = np.divide(np.bincount(labels, weights=hits, minlength=n) * 100, count,
                    out=np.full(n, np.nan), where=count > 0)
    fig = Figure(figsize=(max(6.0, 0.35 * n + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, np.nan_to_num(acc), color="#4878a8")
    ax.axhline(hits.mean() * 100 if len(hits) else 0.0, color="k", ls="--", lw=1, label="overall top-1")
    ax.set_xticks(x, [f"{c} (n={int(k)})" for c, k in zip(classes, count)], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return fig
