"""The paper's table layouts, filled from the tidy results frame.

A layout is data: columns name (suite, head, metric). Rows are baselines, each followed by its boosted
candidates (``boosted_from`` = the baseline's spec) with a Δ row, and by reference rows: the floor the
baseline's runs logged (``floor.<metric>``: what a trivial predictor scores on the same split) and the
random-init encoder of the same architecture (``random_of`` = the baseline's spec), each with a Δ row.
Every Δ carries a bootstrap 95 % CI from the two sides' per-sample records (paired when they share their
sample ids); a value is bold only where that CI excludes 0. Every filled cell keeps the run ids it came
from; every empty cell, and every Δ without a CI, says why.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import pandas as pd

from results.runs import aggregate_seeds
from results.stats import DeltaCI, delta_ci_runs


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


LAYOUTS: Mapping[str, Layout] = MappingProxyType({l.key: l for l in (
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
        Column("VG", "ScanRefer", "lexicon3d.scanrefer", "acc50"),
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
    Layout("table9", "Table 9: Vision-language understanding (LLaVA-1.5 VLM per frozen encoder, lmms-eval)",
           "Accuracy; '(world)' columns are the local tasks generated from the synthetic world.", (
        Column("SpatialRGPT (world)", "Qual.", "vqa.spatialrgpt_qual_local", "acc"),
        Column("SpatialRGPT (world)", "Quan.", "vqa.spatialrgpt_quant_local", "acc"),
        Column("BLINK (world)", "Depth", "vqa.blink_depth_local", "acc"),
        Column("BLINK", "Depth", "vqa.blink_depth", "score"),
        Column("General", "VQAv2", "vqa.vqav2", "score"), Column("General", "GQA", "vqa.gqa", "score"),
        Column("General", "SQA-I", "vqa.sqa_img", "score"), Column("General", "MME", "vqa.mme", "score"))),
    Layout("table21", "Table 21: More VLM benchmarks (LLaVA-1.5 VLM per frozen encoder, lmms-eval)", "", (
        Column("", "MMMU", "vqa.mmmu", "score"), Column("", "RealWorldQA", "vqa.realworldqa", "score"),
        Column("", "OCRBench", "vqa.ocrbench", "score"), Column("", "DocVQA", "vqa.docvqa", "score"),
        Column("", "BLINK", "vqa.blink", "score"), Column("", "MUIRBench", "vqa.muirbench", "score"),
        Column("", "ERQA", "vqa.erqa", "score"))),
)})


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    run_ids: tuple[str, ...] = ()
    direction: str = "max"
    best: bool = False          # value cells: better of its pair with the CI excluding 0 (bold);
                                # delta cells: the point estimate favours the later row (colour)
    missing: str = ""           # why empty
    metric: str = ""            # the metric whose per_sample/<metric>.npz backs this cell
    ci: DeltaCI | None = None   # delta cells: bootstrap CI of the difference
    no_ci: str = ""             # delta cells: why there is no CI

    @property
    def significant(self) -> bool:
        return self.ci is not None and self.ci.significant

    def text(self, digits: int = 2) -> str:
        if self.mean is None:
            return "-"
        s = f"{self.mean:.{digits}f}"
        if self.std is not None and not math.isnan(self.std):
            s += f" ± {self.std:.{digits}f}"
        return s

    def delta_text(self, digits: int = 2) -> str:
        """``+0.12 [0.05, 0.19]``, ``n.s.`` when the CI holds 0, ``unpaired`` / ``(no CI)`` as it applies."""
        if self.mean is None:
            return "-"
        if self.ci is not None and 0 < self.ci.high - self.ci.low < 10 ** -digits * 5:
            digits = min(4, 1 - math.floor(math.log10(self.ci.high - self.ci.low)))   # show a tiny CI
        s = f"{self.mean:+.{digits}f}"
        if self.ci is not None:
            s += f" [{self.ci.low:.{digits}f}, {self.ci.high:.{digits}f}]"
            if not self.ci.paired:
                s += " unpaired"
            if not self.ci.significant:
                s += " n.s."
        elif self.no_ci:
            s += " (no CI)"
        return s


@dataclass
class Row:
    label: str
    encoder: str
    kind: str                    # baseline | boosted | floor | random | delta
    cells: list[Cell] = field(default_factory=list)
    spec: str = ""               # the full encoder spec (hover / details list / LaTeX comment)
    reference: bool = False      # floor / random-init rows and their deltas: greyed

    @property
    def run_ids(self) -> list[str]:
        return sorted({i for c in self.cells for i in c.run_ids})


@dataclass
class Check:
    """Does a baseline beat a reference row in one column (the report's signal check)?"""
    baseline: str
    column: Column
    reference: str               # "floor" | "random-init"
    base: Cell
    ref: Cell
    delta: Cell                  # baseline - reference
    ref_label: str = ""          # which floor (a suite may log several: floor, floor_map, floor_cue, ...)


@dataclass
class Table:
    layout: Layout
    rows: list[Row]
    notes: list[str]
    ci_notes: list[str] = field(default_factory=list)   # CIs missing or unpaired; what each floor is
    checks: list[Check] = field(default_factory=list)


def column_frame(agg: pd.DataFrame, col: Column) -> pd.DataFrame:
    """The seed-aggregated rows of one column (suite, metric, and head when the column names one)."""
    sub = agg[(agg["suite"] == col.suite) & (agg["metric"] == col.metric)]
    return _head_filter(sub, col)


def missing_columns(agg: pd.DataFrame, columns, registered: set[str], hint: str = "") -> dict[Column, str]:
    """Why each empty column is empty (suite not implemented, or no finished run), for the table's notes."""
    reasons = {}
    for col in columns:
        if col.suite not in registered:
            reasons[col] = f"suite {col.suite} is not implemented in this harness version"
        elif column_frame(agg, col).empty:
            reasons[col] = f"no finished {col.suite} run" + (f" with head {col.head}" if col.head else "") + \
                           " in this experiment" + hint
    return reasons


def cell_from_agg(sub: pd.DataFrame, metric: str, what: str) -> Cell:
    """One cell from the aggregated rows of one (encoder, column): mean, std over seeds (or the run's own
    std over its internal seeds), and the run ids; ``what`` says why it is empty."""
    if sub.empty:
        return Cell(missing=what)
    r = sub.sort_values("n").iloc[-1]
    std = float(r["std"]) if int(r["n"]) > 1 and pd.notna(r["std"]) else None
    if std is None and "run_std" in r and pd.notna(r["run_std"]):
        std = float(r["run_std"])
    return Cell(float(r["mean"]), std, int(r["n"]), tuple(str(r["run_ids"]).split(",")), r["direction"],
                metric=metric)


def _head_filter(sub: pd.DataFrame, col: Column) -> pd.DataFrame:
    if col.head and not sub.empty:
        sub = sub[sub["head"].map(lambda h: col.head in str(h).split(",")).astype(bool)]
    return sub


def floor_metrics(metric: str) -> list[str]:
    """Names a column's floor may be logged under: ``lin.rmse`` -> floor.lin.rmse, floor.rmse."""
    out = [f"floor.{metric}"]
    if "." in metric:
        out.append(f"floor.{metric.split('.', 1)[1]}")
    return out


def short_name(spec: str) -> str:
    """``builtin:dinov2-s14-focus`` -> dinov2-s14-focus; ``timm:NAME?ckpt=..`` -> NAME; paths -> last part."""
    body = spec.split("?", 1)[0]
    body = body.split(":", 1)[1] if ":" in body else body
    parts = [p for p in body.replace("\\", "/").split("/") if p]
    name = parts[-1] if parts else body
    for ext in (".pth", ".pt", ".safetensors", ".bin"):
        name = name[: -len(ext)] if name.endswith(ext) else name
    return name or spec


def _boost_run(spec: str) -> str:
    """The boost run a ``boosted:`` spec points at: ``runs:/ID/encoder`` -> ID[:8]; a folder -> its name
    (``.../boost/<hash>/boosted`` -> <hash>[:8])."""
    target = spec.split(":", 1)[1] if spec.startswith("boosted:") else spec
    if target.startswith("runs:/"):
        return target[len("runs:/"):].split("/", 1)[0][:8]
    parts = [p for p in target.split("?", 1)[0].split("/") if p]
    while len(parts) > 1 and parts[-1] in ("boosted", "encoder", "boosted.json"):
        parts.pop()
    return parts[-1][:12] if parts else target


def _base_label(spec: str) -> str:
    """Baselines keep their spec unless it holds a filesystem path (then the short name)."""
    return spec if "/" not in spec and len(spec) <= 60 else short_name(spec)


def delta_cell(a: Cell, b: Cell, where: str, samples, resamples: int, seed: int, ci_notes: list[str]) -> Cell:
    """b - a, with the bootstrap CI from both sides' per-sample records (paired when they share sample ids);
    why a CI is missing or unpaired goes to ``ci_notes``."""
    if a.mean is None or b.mean is None:
        return Cell(missing="needs both rows")
    direction = b.direction or a.direction
    better = b.mean > a.mean if direction == "max" else b.mean < a.mean
    d = Cell(b.mean - a.mean, None, 1, (), direction, better and b.mean != a.mean)
    if samples is None or resamples <= 0:
        d.no_ci = "CIs were not computed for this report"
        return d
    a_ps = [samples.get(r, a.metric) for r in a.run_ids]
    b_ps = [samples.get(r, b.metric) for r in b.run_ids]
    why = [x for x in a_ps + b_ps if isinstance(x, str)]
    if why:
        d.no_ci = why[0] + (f" (and {len(why) - 1} more)" if len(why) > 1 else "")
        ci_notes.append(f"{where}: no CI, {d.no_ci}")
        return d
    key = (a.run_ids, a.metric, b.run_ids, b.metric, resamples, seed)
    d.ci = samples.cached(key, lambda: delta_ci_runs(
        a_ps, b_ps, resamples, seed, labels=(f"run {','.join(a.run_ids)}", f"run {','.join(b.run_ids)}")))
    if not d.ci.paired:
        ci_notes.append(f"{where}: {d.ci.note}")
    return d


def build_table(df: pd.DataFrame, layout: Layout, registered: set[str], samples=None, resamples: int = 2000,
                seed: int = 0) -> Table:
    """Rows per baseline: the baseline, its boosted candidates each with a Δ row, then its reference rows
    (floor, random-init) each with a Δ row (baseline − reference). ``samples`` (a PerSampleStore) gives
    the per-sample records for the bootstrap CIs; without it the Δ rows have no CI."""
    agg = aggregate_seeds(df)
    encoders = sorted(set(df["encoder"])) if not df.empty else []

    def tag(e: str, name: str) -> str:
        if name not in df:
            return ""
        vals = [str(v) for v in df[df["encoder"] == e][name] if pd.notna(v) and str(v) not in ("", "nan")]
        return vals[0] if vals else ""

    boosted_of = {e: tag(e, "boosted_from") for e in encoders}
    random_of = {e: tag(e, "random_of") or (e[len("random:"):] if e.startswith("random:") else "")
                 for e in encoders}
    bases = sorted({e for e in encoders if not boosted_of[e] and not random_of[e]}
                   | {b for b in boosted_of.values() if b} | {b for b in random_of.values() if b})
    notes: list[str] = []
    ci_notes: list[str] = []
    checks: list[Check] = []
    reasons = missing_columns(agg, layout.columns, registered)
    for col, why in reasons.items():
        notes.append(f"{col.group} {col.label}: {why}".strip())
    from_agg = cell_from_agg

    def cell(enc: str, col: Column) -> Cell:
        if col in reasons:
            return Cell(missing=reasons[col])
        sub = column_frame(agg, col)
        return from_agg(sub[sub["encoder"] == enc], col.metric, f"{enc} was not evaluated on {col.suite}")

    def floor_cell(base: str, col: Column, kind: str = "") -> Cell:
        if col in reasons:
            return Cell(missing=reasons[col])
        sub = _head_filter(agg[(agg["suite"] == col.suite) & (agg["encoder"] == base)], col)
        for name in floor_metrics(col.metric):
            name = name.replace("floor.", f"floor_{kind}.", 1) if kind else name
            hit = sub[sub["metric"] == name]
            if not hit.empty:
                return from_agg(hit, name, "")
        return Cell(missing=f"the {base} run on {col.suite} logged no " +
                            " / ".join(floor_metrics(col.metric)).replace("floor.", f"floor_{kind}." if kind else "floor."))

    def delta(a: Cell, b: Cell, row_label: str, col: Column) -> Cell:
        where = f"{row_label} / {col.group} {col.label}".replace("  ", " ")
        return delta_cell(a, b, where, samples, resamples, seed, ci_notes)

    rows: list[Row] = []
    for base in bases:
        base_row = Row(_base_label(base), base, "baseline", [cell(base, c) for c in layout.columns], spec=base)
        rows.append(base_row)
        for cand in sorted(e for e in encoders if boosted_of[e] == base):
            label = _boosted_label(base, cand, tag)
            row = Row(label, cand, "boosted", [cell(cand, c) for c in layout.columns], spec=cand)
            drow = Row("Δ", cand, "delta", [], spec=cand)
            for col, bc, cc in zip(layout.columns, base_row.cells, row.cells):
                d = delta(bc, cc, label, col)
                if d.significant:
                    (cc if d.best else bc).best = True
                drow.cells.append(d)
            rows += [row, drow]
        refs: list[tuple[Row, str]] = []
        floor_labels: dict[str, dict] = {}     # floor row -> column -> what that column's floor is
        for kind in ["", *_floor_kinds(agg, base, layout)]:
            label, per_col, by_col = _floor_label(base, layout, kind, floor_cell, samples)
            r = Row(label, base, "floor", [floor_cell(base, c, kind) for c in layout.columns], spec=base,
                    reference=True)
            if any(c.mean is not None for c in r.cells):
                refs.append((r, f"floor ({kind})" if kind else "floor"))
                floor_labels[refs[-1][1]] = {c: re.sub(r"\s*\([^()]*\)", "", w).strip() or label
                                             for c, w in by_col.items()}
                if per_col:
                    ci_notes.append(f"{label} of {base_row.label}: " + "; ".join(per_col))
        for rnd in sorted(e for e in encoders if random_of[e] == base):
            r = Row("random-init", rnd, "random", [cell(rnd, c) for c in layout.columns], spec=rnd, reference=True)
            if any(c.mean is not None for c in r.cells):   # a layout it was never evaluated on: no row
                refs.append((r, "random-init"))
        for ref, what in refs:
            drow = Row(f"Δ baseline − {what}", ref.encoder, "delta", [], spec=ref.spec, reference=True)
            for col, rc, bc in zip(layout.columns, ref.cells, base_row.cells):
                d = delta(rc, bc, f"{base_row.label} vs {ref.label}", col)
                drow.cells.append(d)
                # every floor kind the column logged: the signal check shows the hardest to beat
                if col not in reasons and (what in ("floor", "random-init") or rc.mean is not None):
                    checks.append(Check(base, col, "floor" if what in floor_labels else what, bc, rc, d,
                                        floor_labels.get(what, {}).get(col, "")))
            rows += [ref, drow]
    if layout.average:
        for row in rows:
            vals = [c.mean for c in row.cells if c.mean is not None]
            ok = len(vals) == len(row.cells)
            row.cells.append(Cell(sum(vals) / len(vals) if ok else None, None, 1,
                                  missing="" if ok else "needs every column"))
    return Table(layout, rows, notes, list(dict.fromkeys(ci_notes)), checks)


def _boosted_label(base: str, cand: str, tag) -> str:
    """``+SpatialBoost dinov2-s14-focus (boost 1a2b3c4d, smollm2-135m, 60 steps)``, "(random LM)" when the
    LM it was trained through was randomly initialised."""
    bits = [f"boost {tag(cand, 'boost_run')[:8] or _boost_run(cand)}"]
    lm = tag(cand, "boost_lm")
    if lm:
        bits.append(short_name(lm))
    steps = tag(cand, "boost_steps")
    if steps:          # "1:1,2:1,3:4" (steps per stage, as the trainer tags it) -> "1/1/4 steps"
        per = [p.split(":", 1)[-1] for p in steps.split(",") if p.strip()]
        bits.append(f"{'/'.join(per)} steps")
    label = f"+SpatialBoost {short_name(base)} ({', '.join(bits)})"
    if tag(cand, "boost_lm_random") in ("1", "true", "True"):
        label += " (random LM)"
    return label


def _floor_kinds(agg: pd.DataFrame, base: str, layout: Layout) -> list[str]:
    """Extra floors (``floor_<kind>.<metric>``) the baseline's runs logged for this layout's columns."""
    kinds = set()
    for col in layout.columns:
        sub = _head_filter(agg[(agg["suite"] == col.suite) & (agg["encoder"] == base)], col)
        wanted = {m.split(".", 1)[1] for m in floor_metrics(col.metric)}
        for m in sub["metric"]:
            if m.startswith("floor_") and "." in m and m.split(".", 1)[1] in wanted:
                kinds.add(m.split(".", 1)[0][len("floor_"):])
    return sorted(kinds)


def floor_description(details: dict, prefix: str) -> str:
    """What a floor is, from the suite's result details: ``details["floors"][prefix]`` (CortexBench) or
    ``details["floor"]["rule"]``, taking the ``prefix = ...`` part of a rule that describes several
    (depth: "floor = train mean depth everywhere; floor_map = per-pixel train mean map")."""
    floors = details.get("floors")
    if isinstance(floors, dict) and isinstance(floors.get(prefix), str):
        return floors[prefix]
    floor = details.get("floor")
    rule = floor.get("rule", "") if isinstance(floor, dict) else (floor if isinstance(floor, str) else "")
    parts = [p.strip() for p in str(rule).split(";")]
    named = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in parts if "=" in p}
    if named:
        return named.get(prefix, "")
    return str(rule) if prefix == "floor" else ""


def _floor_label(base: str, layout: Layout, kind: str, floor_cell, samples) -> tuple[str, list[str], dict]:
    """``floor (<what>)``, when the columns' floors differ what each column's floor is (for the notes), and
    each column's own description (for the signal check).

    <what> is the suite's own description of the floor (result details, or ``meta["what"]`` of its
    per-sample record) when every column's floor has the same short one; else the kind
    (``floor_<kind>.``) or "trivial predictor", with the per-column descriptions (or metric names)
    returned for the table's notes."""
    per_col, whats, by_col = [], [], {}
    prefix = f"floor_{kind}" if kind else "floor"
    for col in layout.columns:
        c = floor_cell(base, col, kind)
        if c.mean is None:
            continue
        what = ""
        if samples is not None and c.run_ids:
            what = floor_description(samples.details(c.run_ids[0]), prefix)
            ps = samples.get(c.run_ids[0], c.metric)
            if not what and not isinstance(ps, str):
                what = str(ps.meta.get("what", ""))
        whats.append(what)
        by_col[col] = what
        per_col.append(f"{col.group} {col.label}".strip() + f": {what or c.metric}")
    if whats and all(whats) and len(set(whats)) == 1:
        short = re.sub(r"\s*\([^()]*\)", "", whats[0]).strip()     # the label without asides
        if 0 < len(short) <= 70:
            return f"floor ({short})", ([] if short == whats[0] else per_col), by_col
    return (f"floor ({kind})" if kind else "floor (trivial predictor)"), per_col, by_col


def summary_layout(df: pd.DataFrame) -> Layout:
    """Every suite in the experiment with its primary metric: what the demo shows."""
    prim = df[df["primary"]].drop_duplicates(["suite", "metric", "head"]).sort_values("suite")
    cols = tuple(Column("", f"{r['suite']} {r['metric']}", r["suite"], r["metric"],
                        str(r["head"]).split(",")[0]) for _, r in prim.iterrows())
    return Layout("summary", "Summary: primary metric of every suite", "Frozen encoders, this experiment's runs.", cols)
