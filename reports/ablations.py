"""The paper's SpatialBoost ablations (Tables 6, 7, 15, 16, 17, 18, 19) as tables of boost variants.

A main-table layout (reports/tables.py) has one row per encoder; an ablation layout has one row per *boost
variant*, found by what the boost varied: the ``boost.*`` tags every eval run of a boosted encoder copies
from its boost (trainer variant, LM, stage-3 samples; the QA data's levels / order / views / source from
encoders/spatialboost/records.py ``data_tags``). Each variant row is followed by its Δ against the base
encoder (``boosted_from``) with the paired bootstrap 95 % CI of results/stats.py; the base encoder is the
first row. A variant with no matching run stays a row with empty cells saying so (e.g. Table 6's pixel
decoders, which the harness does not train). Cells keep their run ids (the renderers show them).

Run one ablation per experiment (configs/ablations/<table>.yaml): the rows of a table are the variants of
that experiment, so a variant is identified by its tags alone, without a sample count to pin.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import pandas as pd

from reports.tables import (Cell, Column, Layout, Row, Table, _boost_run, cell_from_agg, column_frame,
                           delta_cell, missing_columns, short_name)
from results.runs import aggregate_seeds

ALL = "pix,obj,scene"
# the tags of the paper's SpatialBoost (every table's "+SpatialBoost" row): all levels, forward, single-view
# ground-truth data, dual-channel attention, a pretrained LM
FULL = MappingProxyType({"boost_levels": ALL, "boost_order": "forward", "boost_views": "1", "boost_source": "gt",
                         "boost_variant": "dual", "boost_lm_random": "0"})


@dataclass(frozen=True)
class VariantRow:
    label: str
    match: Mapping[str, str] = field(default_factory=dict)   # results-frame column -> value (over FULL)
    unavailable: str = ""       # why the harness cannot produce this row (shown in its cells)
    paper: str = ""             # the paper's numbers of this row, for the caption of the Markdown table


@dataclass(frozen=True)
class AblationLayout:
    key: str
    title: str
    caption: str
    columns: tuple[Column, ...]
    rows: tuple[VariantRow, ...]
    x: str = ""                 # Table 18: the results-frame column plotted on the (log) x axis

    def as_layout(self) -> Layout:
        return Layout(self.key, self.title, self.caption, self.columns)


def _full(**over: str) -> dict[str, str]:
    return {**FULL, **over}


CLS = Column("", "Cls (ImageNet lin.)", "cls.imagenet", "lin.top1")
SEG = Column("", "Seg (ADE20K lin.)", "seg.ade20k", "linear.mIoU", "linear")
DEPTH = Column("", "Depth (NYUd lin. RMSE)", "depth.nyud", "lin.rmse", "linear")
VLR = Column("", "VLR (ScanQA BLEU-1)", "lexicon3d.scanqa", "bleu1")
CORE = (CLS, SEG, DEPTH)

ABLATIONS: Mapping[str, AblationLayout] = MappingProxyType({a.key: a for a in (
    AblationLayout("table6", "Table 6: Effect of LLM-based fine-tuning (headers)",
                   "Paper (ViT-L/14): DINOv2 86.3 / 47.7 / 0.38 / 39.2; +LLM (ours) 88.3 / 51.5 / 0.32 / 40.0; "
                   "pixel headers lose Cls or VLR (linear depth 85.7 / 47.9 / 0.35 / 36.9).", (*CORE, VLR), (
        VariantRow("+Linear (depth)", unavailable="the harness trains no pixel-level header"),
        VariantRow("+Linear (seg.)", unavailable="the harness trains no pixel-level header"),
        VariantRow("+SAM decoder", unavailable="the harness trains no SAM decoder header"),
        VariantRow("+VGGT decoder", unavailable="the harness trains no VGGT decoder header"),
        VariantRow("+LLM, random-init LM (no language)", _full(boost_lm_random="1")),
        VariantRow("+LLM (ours)", _full()))),
    AblationLayout("table7", "Table 7: Component-wise analysis (multi-turn order, single/multi-view data)",
                   "Paper: DINOv2 86.3 / 47.7 / 0.38; Reverse 87.4 / 48.4 / 0.35; Random 87.4 / 48.5 / 0.36; "
                   "Forward SV 87.6 / 48.9 / 0.34; Forward MV 87.6 / 48.2 / 0.36; Forward SV+MV 87.6 / 49.2 / 0.32.",
                   CORE, (
        VariantRow("Reverse, single-view", _full(boost_order="reverse")),
        VariantRow("Random, single-view", _full(boost_order="random")),
        VariantRow("Forward, single-view", _full()),
        VariantRow("Forward, multi-view", _full(boost_views="2")),
        VariantRow("Forward, single + multi-view", _full(boost_views="1+2")))),
    AblationLayout("table15", "Table 15: Effect of reasoning hierarchy (levels)",
                   "Paper (DINOv2 lin.): pre-trained depth 0.38, seg 47.7, cls 86.3; Pix 0.34 / 48.2 / 86.6; "
                   "Obj 0.37 / 48.0 / 87.2; Scene 0.38 / 47.7 / 87.1; Pix+Obj+Scene 0.32 / 49.2 / 87.6.",
                   (DEPTH, SEG, CLS), tuple(
        VariantRow(label, _full(boost_levels=levels)) for label, levels in (
            ("Pix", "pix"), ("Obj", "obj"), ("Scene", "scene"), ("Pix + Obj", "pix,obj"),
            ("Pix + Scene", "pix,scene"), ("Obj + Scene", "obj,scene"), ("Pix + Obj + Scene", ALL)))),
    AblationLayout("table16", "Table 16: Single-view vs multi-view data (proportions at a fixed total)",
                   "Paper (SigLIPv2 ViT-g): SV 200K + MV 100K 90.2 / 44.7 / 0.41; 150K + 150K 90.0 / 44.9 / 0.39; "
                   "100K + 200K 90.0 / 45.1 / 0.39 (more MV: better dense and 3D tasks).",
                   CORE + (Column("3D SU", "mIoU", "lexicon3d.semantic", "mIoU"),), (
        VariantRow("SV 2/3 + MV 1/3", _full(boost_views="1+2", boost_mix="2:1")),
        VariantRow("SV 1/2 + MV 1/2", _full(boost_views="1+2", boost_mix="1:1")),
        VariantRow("SV 1/3 + MV 2/3", _full(boost_views="1+2", boost_mix="1:2")))),
    AblationLayout("table17", "Table 17: Dual-channel attention vs full fine-tuning vs LoRA",
                   "Paper: DINOv2 86.3 / 47.7 / 0.38; Full FT 79.5 / 49.4 / 0.31; LoRA 81.7 / 49.0 / 0.32; "
                   "Dual-channel 87.6 / 49.2 / 0.32.", CORE, (
        VariantRow("Full fine-tuning", _full(boost_variant="full")),
        VariantRow("LoRA", _full(boost_variant="lora")),
        VariantRow("Dual-channel attention", _full()))),
    AblationLayout("table18", "Table 18: Data scalability (stage-3 samples)",
                   "Paper (DINOv3): pre-trained 88.4 / 55.9 / 0.31; 50K 88.6 / 56.8 / 0.29; 100K 90.0 / 58.3 / "
                   "0.28; 300K 90.2 / 59.7 / 0.25. One row per sample count found.", CORE, (
        VariantRow("samples", _full()),), x="boost_data_samples"),
    AblationLayout("table19", "Table 19: Reasoning data from vision foundation models vs ground truth",
                   "Paper: DINOv2 86.3 / 47.7 / 0.38 / 39.2; VFM-based 87.5 / 48.7 / 0.34 / 39.6; GT-based 87.5 / "
                   "48.8 / 0.34 / 36.9; Δ(VFM − GT) ≈ 0.", (*CORE, VLR), (
        VariantRow("VFM-based", _full(boost_source="!gt")),
        VariantRow("GT-based", _full()))),
)})


def _norm(col: str, value) -> str:
    """A frame value as the layouts spell it: views ``1:8,2:8`` -> ``1+2`` (with ``boost_mix`` the ratio)."""
    v = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    if col == "boost_views" and ":" in v:
        return "+".join(p.split(":", 1)[0] for p in v.split(","))
    if col == "boost_lm_random" and v == "":
        return "0"
    return v


def mix_ratio(views: str, tolerance: float = 0.03) -> str:
    """``1:16,2:8`` -> ``2:1``: the parts' sample counts as the nearest ratio of whole numbers up to 3 when each
    part's share is within ``tolerance`` of it (a 16-sample demo splits 11 + 5 for "2/3 + 1/3"), else the
    exact smallest whole-number ratio."""
    try:
        counts = [int(p.split(":", 1)[1]) for p in str(views).split(",")]
    except (ValueError, IndexError):
        return ""
    total = sum(counts)
    if total <= 0:
        return ""
    for ratio in itertools.product(range(1, 4), repeat=len(counts)):
        if math.gcd(*ratio) == 1 and all(abs(c / total - r / sum(ratio)) <= tolerance
                                         for c, r in zip(counts, ratio)):
            return ":".join(map(str, ratio))
    g = math.gcd(*counts)
    return ":".join(str(c // g) for c in counts) if g else ""


def variant_tags(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Boosted encoder -> its normalised tags (one run of it suffices: the tags come from its boost)."""
    out: dict[str, dict[str, str]] = {}
    if df.empty:
        return out
    for enc, g in df[df["boosted_from"].astype(str) != ""].groupby("encoder"):
        r = g.iloc[0]
        tags = {c: _norm(c, r.get(c, "")) for c in (*FULL, "boost_data_samples", "boost_samples")}
        views = str(r.get("boost_views", ""))
        tags["boost_mix"] = mix_ratio(views) if ":" in views else ""
        tags["boost_parts"] = " + ".join(p.split(":", 1)[1] for p in views.split(",")) + " samples" if ":" in views else ""
        tags["boost_run"] = str(r.get("boost_run", ""))
        out[str(enc)] = tags
    return out


def matches(tags: Mapping[str, str], want: Mapping[str, str]) -> bool:
    """Every wanted column equal (``!x`` = anything but x and not empty)."""
    for k, v in want.items():
        have = tags.get(k, "")
        if v.startswith("!"):
            if not have or have == v[1:]:
                return False
        elif have != v:
            return False
    return True


def _samples_label(tags: Mapping[str, str]) -> str:
    n = tags.get("boost_data_samples") or tags.get("boost_samples")
    try:
        return f"{int(float(n))} samples"
    except (TypeError, ValueError):
        return "samples unknown"


def build_ablation(df: pd.DataFrame, layout: AblationLayout, registered: set[str], samples=None,
                   resamples: int = 2000, seed: int = 0) -> Table:
    """Per base encoder: its row, then each variant row (every boosted encoder of it whose tags match; Table
    18: one per sample count, ascending) with a Δ row (variant − base) carrying the paired CI."""
    agg = aggregate_seeds(df)
    tags = variant_tags(df)
    notes: list[str] = []
    ci_notes: list[str] = []
    reasons = missing_columns(agg, layout.columns, registered,
                              hint=" (the campaign's suites decide the columns it fills)")
    notes += [f"{c.label}: {why}" for c, why in reasons.items()]

    def cell(enc: str, col: Column) -> Cell:
        if col in reasons:
            return Cell(missing=reasons[col])
        sub = column_frame(agg, col)
        return cell_from_agg(sub[sub["encoder"] == enc], col.metric, f"{enc} was not evaluated on {col.suite}")

    def delta(a: Cell, b: Cell, where: str) -> Cell:
        return delta_cell(a, b, where, samples, resamples, seed, ci_notes)

    boosted_of = {e: str(g["boosted_from"].iloc[0]) for e, g in df.groupby("encoder")} if not df.empty else {}
    bases = sorted({b for b in boosted_of.values() if b})
    rows: list[Row] = []
    used: set[str] = set()
    for base in bases:
        base_row = Row(short_name(base), base, "baseline", [cell(base, c) for c in layout.columns], spec=base)
        rows.append(base_row)
        for vr in layout.rows:
            if vr.unavailable:
                rows.append(Row(vr.label, "", "boosted", [Cell(missing=vr.unavailable) for _ in layout.columns]))
                notes.append(f"row {vr.label}: {vr.unavailable}")
                continue
            cands = [e for e, t in tags.items() if boosted_of.get(e) == base and matches(t, vr.match)]
            if layout.x:
                cands.sort(key=lambda e: float(tags[e].get(layout.x) or "nan"))
            if not cands:
                notes.append(f"row {vr.label}: no boost of this variant in the experiment")
                rows.append(Row(vr.label, "", "boosted", [Cell(missing="no boost of this variant in the experiment "
                                                                      f"(tags {dict(vr.match)})")
                                                          for _ in layout.columns]))
                continue
            for enc in cands:
                used.add(enc)
                label = _samples_label(tags[enc]) if layout.x else vr.label
                if "boost_mix" in vr.match and tags[enc].get("boost_parts"):
                    label += f" ({tags[enc]['boost_parts']})"      # the actual split, e.g. 11 + 5 samples
                if len(cands) > 1 and not layout.x:
                    label += f" (boost {tags[enc]['boost_run'][:8] or _boost_run(enc)})"
                row = Row(label, enc, "boosted", [cell(enc, c) for c in layout.columns], spec=enc)
                drow = Row("Δ vs " + base_row.label, enc, "delta", [], spec=enc)
                for col, bc, vc in zip(layout.columns, base_row.cells, row.cells):
                    d = delta(bc, vc, f"{label} / {col.label}")
                    if d.significant:
                        (vc if d.best else bc).best = True
                    drow.cells.append(d)
                rows += [row, drow]
    other = sorted(e for e in tags if e not in used)
    if other:
        notes.append(f"{len(other)} boosted encoder(s) of this experiment match no row of this table: "
                     + ", ".join(f"{short_name(e)} {tags[e]}" for e in other[:3]))
    return Table(layout.as_layout(), rows, list(dict.fromkeys(notes)), list(dict.fromkeys(ci_notes)), [])


def present(df: pd.DataFrame) -> list[str]:
    """The ablation tables an experiment varies: at least two of a table's rows filled (Table 18: two sample
    counts). One experiment per ablation (configs/ablations/) thus gets its own table by default, and the
    shared "+SpatialBoost" row alone does not pull in the others."""
    tags = variant_tags(df)
    out = []
    for key, a in ABLATIONS.items():
        if a.x:
            xs = {t.get(a.x) for t in tags.values() for r in a.rows if matches(t, r.match) and t.get(a.x)}
            hit = len(xs)
        else:
            hit = sum(any(matches(t, r.match) for t in tags.values()) for r in a.rows if not r.unavailable)
        if hit >= 2:
            out.append(key)
    return out
