"""The paper's table layouts, filled from the tidy results frame.

A layout is data: columns name (suite, head, metric). Rows are baselines, each followed by its boosted
candidates (``boosted_from`` = the baseline's spec) and a delta row. Every filled cell keeps the run ids
it came from; every empty cell says why it is empty.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from results.runs import aggregate_seeds


@dataclass(frozen=True)
class Column:
    group: str
    label: str
    suite: str
    metric: str
    head: str | None = None     # the run's head tag must contain it


@dataclass(frozen=True)
class Layout:
    key: str
    title: str
    caption: str
    columns: tuple[Column, ...]
    average: bool = False


LAYOUTS: dict[str, Layout] = {l.key: l for l in (
    Layout("table1", "Table 1: Monocular depth estimation (RMSE)", "Frozen encoder; linear or DPT head.", (
        Column("NYUd", "lin.", "depth.nyud", "lin.rmse", "linear"), Column("NYUd", "DPT", "depth.nyud", "dpt.rmse", "dpt"),
        Column("KITTI", "lin.", "depth.kitti", "lin.rmse", "linear"),
        Column("KITTI", "DPT", "depth.kitti", "dpt.rmse", "dpt"))),
    Layout("table2", "Table 2: Semantic segmentation (mIoU)", "Frozen encoder; linear or multi-scale (+ms).", (
        Column("ADE20K", "lin.", "seg.ade20k", "linear.mIoU", "linear"),
        Column("ADE20K", "+ms", "seg.ade20k", "ms.mIoU", "ms"),
        Column("VOC", "lin.", "seg.voc", "linear.mIoU", "linear"), Column("VOC", "+ms", "seg.voc", "ms.mIoU", "ms"))),
    Layout("table3", "Table 3: 3D-centric tasks (Lexicon3D probing)", "ScanNet scenes.", (
        Column("VLR", "ScanQA", "lexicon3d.scanqa", "bleu1"), Column("VLR", "SQA3D", "lexicon3d.sqa3d", "bleu1"),
        Column("VG", "ScanRefer", "lexicon3d.scanrefer", "acc_overall"),
        Column("GU", "RR@0.05m", "lexicon3d.registration", "RR"),
        Column("GU", "RTE", "lexicon3d.registration", "RTE"),
        Column("3D SU", "Acc", "lexicon3d.semantic", "acc"), Column("3D SU", "mIoU", "lexicon3d.semantic", "mIoU"))),
    Layout("table4", "Table 4: Vision-based robot learning (CortexBench)",
           "Success rate (%), DMControl normalised score; mean ± std over seeds.", (
        Column("", "Adroit", "cortexbench.adroit", "success"),
        Column("", "MetaWorld", "cortexbench.metaworld", "success"),
        Column("", "DMControl", "cortexbench.dmc", "score"),
        Column("", "TriFinger", "cortexbench.trifinger", "success")), average=True),
    Layout("table5", "Table 5: Classification and retrieval", "ImageNet top-1 (kNN, lin.); Met GAP; mAP.", (
        Column("ImageNet", "kNN", "cls.imagenet", "knn.top1"), Column("ImageNet", "lin.", "cls.imagenet", "lin.top1"),
        Column("Retrieval", "Met", "retrieval.met", "GAP"), Column("Retrieval", "Oxford-H", "retrieval.roxford", "mAP.H"),
        Column("Retrieval", "Paris-H", "retrieval.rparis", "mAP.H"),
        Column("Retrieval", "AmsterTime", "retrieval.amstertime", "mAP"))),
    Layout("table8", "Table 8: Effect of post-training (one headline metric per task)", "", (
        Column("Depth", "NYUd RMSE", "depth.nyud", "lin.rmse", "linear"),
        Column("Seg.", "ADE20K mIoU", "seg.ade20k", "linear.mIoU", "linear"),
        Column("Robot", "MetaWorld", "cortexbench.metaworld", "success"),
        Column("Cls.", "ImageNet lin.", "cls.imagenet", "lin.top1"),
        Column("Ret.", "Oxford-H", "retrieval.roxford", "mAP.H"))),
)}


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    run_ids: tuple[str, ...] = ()
    direction: str = "max"
    best: bool = False          # better of its baseline/boosted pair
    missing: str = ""           # why empty

    def text(self, digits: int = 2) -> str:
        if self.mean is None:
            return "-"
        s = f"{self.mean:.{digits}f}"
        if self.n > 1 and self.std is not None and not math.isnan(self.std):
            s += f" ± {self.std:.{digits}f}"
        return s


@dataclass
class Row:
    label: str
    encoder: str
    kind: str                    # baseline | boosted | delta
    cells: list[Cell] = field(default_factory=list)


@dataclass
class Table:
    layout: Layout
    rows: list[Row]
    notes: list[str]


def _col_frame(agg: pd.DataFrame, col: Column) -> pd.DataFrame:
    sub = agg[(agg["suite"] == col.suite) & (agg["metric"] == col.metric)]
    if col.head:
        sub = sub[sub["head"].apply(lambda h: col.head in str(h).split(","))]
    return sub


def build_table(df: pd.DataFrame, layout: Layout, registered: set[str]) -> Table:
    agg = aggregate_seeds(df)
    encoders = sorted(set(df["encoder"])) if not df.empty else []
    boosted_of = {e: (df[df["encoder"] == e]["boosted_from"].iloc[0] or "") for e in encoders}
    bases = sorted({e for e in encoders if not boosted_of[e]} | {b for b in boosted_of.values() if b})
    notes = []
    reasons = {}
    for col in layout.columns:
        if col.suite not in registered:
            reasons[col] = f"suite {col.suite} is not implemented in this harness version"
        elif _col_frame(agg, col).empty:
            reasons[col] = f"no finished {col.suite} run" + (f" with head {col.head}" if col.head else "") + \
                           " in this experiment"
    for col, why in reasons.items():
        notes.append(f"{col.group} {col.label}: {why}".strip())

    def cell(enc: str, col: Column) -> Cell:
        if col in reasons:
            return Cell(missing=reasons[col])
        sub = _col_frame(agg, col)
        sub = sub[sub["encoder"] == enc]
        if sub.empty:
            return Cell(missing=f"{enc} was not evaluated on {col.suite}")
        r = sub.sort_values("n").iloc[-1]
        return Cell(float(r["mean"]), float(r["std"]) if pd.notna(r["std"]) else None, int(r["n"]),
                    tuple(str(r["run_ids"]).split(",")), r["direction"])

    rows: list[Row] = []
    for base in bases:
        base_row = Row(base, base, "baseline", [cell(base, c) for c in layout.columns])
        rows.append(base_row)
        for cand in sorted(e for e in encoders if boosted_of[e] == base):
            row = Row("+SpatialBoost " + cand, cand, "boosted", [cell(cand, c) for c in layout.columns])
            delta = Row("Δ", cand, "delta", [])
            for bc, cc in zip(base_row.cells, row.cells):
                if bc.mean is None or cc.mean is None:
                    delta.cells.append(Cell(missing="needs both runs"))
                    continue
                better_boosted = cc.mean > bc.mean if bc.direction == "max" else cc.mean < bc.mean
                if cc.mean != bc.mean:
                    (cc if better_boosted else bc).best = True
                delta.cells.append(Cell(cc.mean - bc.mean, None, 1, (), bc.direction, better_boosted))
            rows += [row, delta]
    if layout.average:
        for row in rows:
            vals = [c.mean for c in row.cells if c.mean is not None]
            ok = len(vals) == len(row.cells)
            row.cells.append(Cell(sum(vals) / len(vals) if ok else None, None, 1,
                                  missing="" if ok else "needs every column"))
    return Table(layout, rows, notes)


def summary_layout(df: pd.DataFrame) -> Layout:
    """Every suite in the experiment with its primary metric: what the demo shows."""
    prim = df[df["primary"]].drop_duplicates(["suite", "metric", "head"]).sort_values("suite")
    cols = tuple(Column("", f"{r['suite']} {r['metric']}", r["suite"], r["metric"],
                        str(r["head"]).split(",")[0]) for _, r in prim.iterrows())
    return Layout("summary", "Summary: primary metric of every suite", "Frozen encoders, this experiment's runs.", cols)
