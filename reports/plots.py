"""Report figures: baseline-vs-boosted bars per suite, data-scaling curves (paper Fig. 5).

Plain ``matplotlib.figure.Figure`` objects rendered on the Agg canvas (no pyplot, so no process-wide
backend switch or figure registry); :func:`report_plots` renders each once to PNG bytes, which the build
writes beside the report, embeds in the HTML and the report run logs to MLflow.
"""
from __future__ import annotations

import base64
import io

import pandas as pd

from results.runs import aggregate_seeds

# name (file stem) -> caption, in the order the HTML shows them
PLOTS = (("primary", "Primary metric per suite"), ("scaling", "Data scaling (paper Figure 5)"))


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def report_plots(df: pd.DataFrame) -> dict[str, bytes]:
    """name -> PNG bytes of every plot that has data (see ``PLOTS``)."""
    makers = {"primary": primary_bars, "scaling": scaling_curves}
    out = {}
    for name, _ in PLOTS:
        fig = makers[name](df)
        if fig is not None:
            out[name] = png_bytes(fig)
    return out


def _figure(figsize):
    from matplotlib.figure import Figure
    return Figure(figsize=figsize)


def _bar_label(row) -> str:
    from reports.tables import _boost_run, short_name
    enc = str(row["encoder"])
    if row["boosted_from"]:
        return f"+SB {short_name(str(row['boosted_from']))[:14]} ({_boost_run(enc)[:8]})"
    if str(row.get("random_of", "")) or enc.startswith("random:"):
        return "random-init"
    return short_name(enc)[:22]


def primary_bars(df: pd.DataFrame):
    """One panel per suite: each encoder's primary metric (error bars = std over seeds); blue baseline,
    orange boosted, grey random-init; the baseline's floor (``floor.<metric>``) as a dashed line."""
    from reports.tables import floor_metrics
    agg = aggregate_seeds(df[df["primary"]])
    if agg.empty:
        return None
    random_of = dict(zip(df["encoder"], df["random_of"])) if "random_of" in df else {}
    agg["random_of"] = agg["encoder"].map(lambda e: random_of.get(e, "") or "")
    floors = aggregate_seeds(df[df["metric"].str.startswith("floor.")]) if "metric" in df else agg.iloc[:0]
    suites = sorted(agg["suite"].unique())
    fig = _figure((3.2 * len(suites), 3.2))
    axes = fig.subplots(1, len(suites), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        sub = agg[agg["suite"] == suite]
        kind = [1 if b else 2 if (r or e.startswith("random:")) else 0
                for b, r, e in zip(sub["boosted_from"], sub["random_of"], sub["encoder"])]
        sub = sub.assign(_kind=kind).sort_values(["_kind", "encoder"])   # baseline, boosted, random-init
        colours = ["#dd8452" if b else "#999999" if (r or e.startswith("random:")) else "#4c72b0"
                   for b, r, e in zip(sub["boosted_from"], sub["random_of"], sub["encoder"])]
        ax.bar(range(len(sub)), sub["mean"], yerr=sub["std"].fillna(0), color=colours)
        metric = sub["metric"].iloc[0]
        fl = floors[(floors["suite"] == suite) & floors["metric"].isin(floor_metrics(metric))]
        if len(fl):
            ax.axhline(float(fl["mean"].iloc[0]), color="#555", ls="--", lw=1, label="floor")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(sub)))
        ax.set_xticklabels([_bar_label(r) for _, r in sub.iterrows()], rotation=30, ha="right", fontsize=7)
        arrow = "↑" if sub["direction"].iloc[0] == "max" else "↓"
        ax.set_title(f"{suite}\n{metric} {arrow}", fontsize=9)
    fig.suptitle("Primary metric per suite\n(blue: baseline, orange: boosted, grey: random-init; "
                 "dashed: floor)", fontsize=10, y=1.12)
    return fig


def scaling_curves(df: pd.DataFrame):
    """Metric vs SpatialBoost training samples for boosted candidates that record it (Figure 5)."""
    sub = df[df["primary"] & df["boost_samples"].notna()]
    if sub.empty or sub["boost_samples"].nunique() < 2:
        return None
    suites = sorted(sub["suite"].unique())
    fig = _figure((3.4 * len(suites), 3.0))
    axes = fig.subplots(1, len(suites), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        s = sub[sub["suite"] == suite]
        for base, g in s.groupby("boosted_from"):
            m = g.groupby("boost_samples")["value"].mean().sort_index()
            ax.plot(m.index, m.values, marker="o", label=base.split(":")[-1][-18:])
        ax.set_xscale("log")
        ax.set_xlabel("QA samples")
        ax.set_title(f"{suite} {s['metric'].iloc[0]}", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def ablation_curve(table):
    """Table 18 as a plot: per column, each variant's metric vs its stage-3 samples (log x), the paired 95 %
    CI of its Δ against the base encoder drawn as a band around the base's value + Δ (so the band holds
    the base line where the CI holds 0), and the base encoder as a dashed line. ``table`` is a built
    :class:`reports.tables.Table` of an x-layout (reports/ablations.py); None without two points."""
    import math
    cols = table.layout.columns
    series = []          # (base row, [(x, value cell, delta cell)])
    rows = table.rows
    for i, r in enumerate(rows):
        if r.kind == "baseline":
            series.append((r, []))
        elif r.kind == "boosted" and r.encoder and series and i + 1 < len(rows) and rows[i + 1].kind == "delta":
            try:
                x = float(r.label.split()[0])
            except ValueError:
                continue
            series[-1][1].append((x, r.cells, rows[i + 1].cells))
    if not any(len(pts) >= 2 for _, pts in series):
        return None
    # only the columns the experiment filled (a demo that evaluates depth only gets one panel, not empty axes)
    keep = [j for j in range(len(cols)) if any(c[j].mean is not None for _, pts in series for _, c, _ in pts)]
    fig = _figure((3.4 * len(keep), 3.0))
    axes = fig.subplots(1, len(keep), squeeze=False)
    for ax, j in zip(axes[0], keep):
        col = cols[j]
        for base, pts in series:
            pts = [(x, c[j], d[j]) for x, c, d in sorted(pts, key=lambda p: p[0]) if c[j].mean is not None]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            line = ax.plot(xs, [p[1].mean for p in pts], marker="o", label=base.label[-24:])[0]
            b = base.cells[j].mean
            if b is not None and all(p[2].ci is not None for p in pts):
                ax.fill_between(xs, [b + p[2].ci.low for p in pts], [b + p[2].ci.high for p in pts],
                                color=line.get_color(), alpha=0.2, lw=0)
            if b is not None and not math.isnan(b):
                ax.axhline(b, color=line.get_color(), ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("stage-3 QA samples")
        arrow = {"max": "↑", "min": "↓"}.get(next((r.cells[j].direction for r in rows if r.cells and
                                                   r.cells[j].mean is not None), ""), "")
        ax.set_title(f"{col.label} {arrow}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Data scalability: metric vs samples (dashed: base encoder; band: paired 95 % CI of Δ)",
                 fontsize=10, y=1.08)
    return fig
