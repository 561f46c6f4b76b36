"""Baseline-vs-boosted tables in Markdown from the tidy results frame."""
from __future__ import annotations

import pandas as pd

from results.runs import aggregate_seeds


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" if n > 1 and pd.notna(std) else f"{mean:.2f}"


def suite_table(df: pd.DataFrame) -> str:
    """One row per encoder, one column per (suite, primary metric); the best value per column in bold."""
    agg = aggregate_seeds(df[df["primary"]])
    if agg.empty:
        return "_no finished runs_\n"
    agg["column"] = agg["suite"] + " " + agg["metric"] + (agg["direction"].map({"max": " ↑", "min": " ↓"}))
    cols = sorted(agg["column"].unique())
    encoders = list(dict.fromkeys(agg.sort_values("encoder")["encoder"]))
    lines = ["| encoder | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    best = {}
    for c in cols:
        sub = agg[agg["column"] == c]
        best[c] = sub["mean"].max() if sub["direction"].iloc[0] == "max" else sub["mean"].min()
    for enc in encoders:
        cells = []
        for c in cols:
            sub = agg[(agg["encoder"] == enc) & (agg["column"] == c)]
            if sub.empty:
                cells.append("-")
                continue
            r = sub.iloc[0]
            cell = _fmt(r["mean"], r["std"], r["n"])
            cells.append(f"**{cell}**" if r["mean"] == best[c] and len(encoders) > 1 else cell)
        lines.append(f"| `{enc}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(df: pd.DataFrame, title: str, notes: list[str] | None = None) -> str:
    out = [f"# {title}", ""]
    for n in notes or []:
        out.append(f"- {n}")
    if notes:
        out.append("")
    out += ["## Primary metric per suite", "", suite_table(df), "## Runs", "",
            "| suite | encoder | head | metric | value | run id |", "|---|---|---|---|---|---|"]
    for _, r in df[df["primary"]].sort_values(["suite", "encoder"]).iterrows():
        out.append(f"| {r['suite']} | `{r['encoder']}` | {r['head']} | {r['metric']} | {r['value']:.3f} | "
                   f"`{r['run_id']}` |")
    return "\n".join(out) + "\n"
