"""Figures for the HTML report: baseline-vs-boosted bars per suite, data-scaling curves (paper Fig. 5)."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from results.runs import aggregate_seeds  # noqa: E402


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def primary_bars(df: pd.DataFrame) -> str | None:
    """One panel per suite: each encoder's primary metric (error bars = std over seeds)."""
    agg = aggregate_seeds(df[df["primary"]])
    if agg.empty:
        return None
    suites = sorted(agg["suite"].unique())
    fig, axes = plt.subplots(1, len(suites), figsize=(3.2 * len(suites), 3.2), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        sub = agg[agg["suite"] == suite].sort_values("encoder")
        colours = ["#4c72b0" if not b else "#dd8452" for b in sub["boosted_from"]]
        ax.bar(range(len(sub)), sub["mean"], yerr=sub["std"].fillna(0), color=colours)
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([e.split("?")[0].split(":")[-1][-18:] for e in sub["encoder"]], rotation=30,
                           ha="right", fontsize=7)
        arrow = "↑" if sub["direction"].iloc[0] == "max" else "↓"
        ax.set_title(f"{suite}\n{sub['metric'].iloc[0]} {arrow}", fontsize=9)
    fig.suptitle("Primary metric per suite (blue: baseline, orange: boosted)", fontsize=10)
    return _uri(fig)


def scaling_curves(df: pd.DataFrame) -> str | None:
    """Metric vs SpatialBoost training samples for boosted candidates that record it (Figure 5)."""
    sub = df[df["primary"] & df["boost_samples"].notna()]
    if sub.empty or sub["boost_samples"].nunique() < 2:
        return None
    suites = sorted(sub["suite"].unique())
    fig, axes = plt.subplots(1, len(suites), figsize=(3.4 * len(suites), 3.0), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        s = sub[sub["suite"] == suite]
        for base, g in s.groupby("boosted_from"):
            m = g.groupby("boost_samples")["value"].mean().sort_index()
            ax.plot(m.index, m.values, marker="o", label=base.split(":")[-1][-18:])
        ax.set_xscale("log")
        ax.set_xlabel("QA samples")
        ax.set_title(f"{suite} {s['metric'].iloc[0]}", fontsize=9)
        ax.legend(fontsize=7)
    return _uri(fig)
