"""Retrieval suites of Table 5: Revisited Oxford / Paris (mAP, hard), Met (GAP), AmsterTime (mAP).

Paper App. A.7: cosine similarity of the last block's [CLS] tokens; 224x224 images for Oxford, Paris and
AmsterTime, the nearest multiple of the patch size for Met; every other setting as each benchmark's
reference. Nothing is trained, so ``fast`` and ``exact`` modes compute the same numbers (features are
cached either way). Metrics are percentages.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.config import field
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from suites.retrieval.datasets import (RevisitedData, load_amstertime, load_met, load_revisited,
                                       make_transform)
from suites.retrieval.metrics import (MET_K_GRID, MET_T_GRID, compute_map, evaluate_amstertime,
                                      evaluate_met, knn_classify, revisitop_protocol, tune_knn)
from suites.retrieval.search import rank_gallery


def _transform(info, image_size: int | None):
    return make_transform(image_size, info.mean, info.std, patch_size=info.patch_size,
                          interpolation=info.interpolation)


def _last_block(encoder) -> int:
    return encoder.resolve_layers([-1])[0]


def _cls(ctx: RunContext, dataset, block: int, desc: str) -> np.ndarray:
    return ctx.features(dataset, [block], ("cls",), desc=desc)[f"cls.{block}"]


def _pct(d: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * v for k, v in d.items()}


# ----------------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RevisitedOptions:
    image_size: int = field(224, help="queries (cropped to bbx) and database images resized to this square")
    kappas: tuple[int, ...] = field((1, 5, 10), help="mP@k cut-offs (revisitop: 1, 5, 10)")
    chunk: int = field(32768, hash=False, help="gallery rows per search chunk (memory only)")


def _revisited_spec(name: str, title: str) -> SuiteSpec:
    ms = []
    for lv, word in (("H", "hard"), ("M", "medium"), ("E", "easy")):
        ms.append(MetricSpec(f"mAP.{lv}", "max", f"{title} {word} mAP (%)"))
        ms += [MetricSpec(f"mP{k}.{lv}", "max", f"{title} {word} mean precision@{k} (%)") for k in (1, 5, 10)]
    return SuiteSpec(name=name, version="1", task="retrieval", heads=("cosine",), metrics=tuple(ms),
                     primary="mAP.H", paper_table="Table 5",
                     description=f"{title}: cropped queries vs database, cosine of CLS at 224x224; "
                                 "revisitop mAP / mP@k, easy / medium / hard.")


class _RevisitedSuite(Suite):
    Options = RevisitedOptions
    dataset_name: ClassVar[str]

    def _data(self, root: Path) -> RevisitedData:
        return load_revisited(root, self.dataset_name)

    def dataset_fingerprint(self, data: Path) -> str:
        return self._data(data).fingerprint()

    def _sets(self, root: Path, info):
        d = self._data(root)
        tf, tid = _transform(info, self.options.image_size)
        return d, d.queries(tf, tid), d.database(tf, tid)

    def validate(self, ctx: RunContext) -> dict:
        d, q, db = self._sets(ctx.data, ctx.encoder.info)
        out = ctx.encoder(torch.stack([q[0][0], db[0][0]]).to(ctx.device))
        return {"dataset": d.name, "queries": len(q), "database": len(db), "feature_dim": int(out.cls.shape[-1])}

    def run(self, ctx: RunContext) -> SuiteResult:
        d, q, db = self._sets(ctx.data, ctx.encoder.info)
        block = _last_block(ctx.encoder)
        fq = _cls(ctx, q, block, "query features")
        fdb = _cls(ctx, db, block, "database features")
        ranks = rank_gallery(fq, fdb, chunk=self.options.chunk, device=ctx.device)
        gnd = d.gnd_dicts()
        metrics: dict[str, float] = {}
        details: dict = {"dataset": d.name, "n_queries": len(q), "n_database": len(db), "block": block}
        for level in ("hard", "medium", "easy"):
            res = compute_map(ranks, revisitop_protocol(gnd, level), self.options.kappas)
            tag = level[0].upper()
            metrics[f"mAP.{tag}"] = 100.0 * res.map
            for k, v in zip(res.kappas, res.mpk):
                metrics[f"mP{k}.{tag}"] = 100.0 * float(v)
            details[f"ap.{level}"] = [None if np.isnan(a) else float(a) for a in res.aps]
            details[f"skipped_queries.{level}"] = int(np.isnan(res.aps).sum())
        return SuiteResult(metrics=metrics, selection={"cosine": {"block": block, "feature": "cls"}},
                           details=details)


class ROxfordSuite(_RevisitedSuite):
    spec = _revisited_spec("retrieval.roxford", "ROxford5k")
    dataset_name = "roxford5k"

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import roxford_root
        return roxford_root(workspace)


class RParisSuite(_RevisitedSuite):
    spec = _revisited_spec("retrieval.rparis", "RParis6k")
    dataset_name = "rparis6k"

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import rparis_root
        return rparis_root(workspace)


# ----------------------------------------------------------------------------------------------------
# The Met
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetOptions:
    image_size: int | None = field(None, help="None: each side to the nearest multiple of the patch size "
                                              "(paper A.7; images are then encoded one at a time)")
    mini: bool = field(False, help="use mini_MET_database.json")
    k_grid: tuple[int, ...] = field(MET_K_GRID, help="kNN K values tuned on val (Met reference grid)")
    t_grid: tuple[float, ...] = field(MET_T_GRID, help="softmax temperatures tuned on val (Met reference grid)")
    chunk: int = field(32768, hash=False, help="gallery rows per search chunk (memory only)")


class MetSuite(Suite):
    spec = SuiteSpec(
        name="retrieval.met", version="1", task="retrieval", heads=("knn",),
        metrics=(MetricSpec("GAP", "max", "test GAP with distractors (%)"),
                 MetricSpec("GAP.nodistr", "max", "test GAP without distractors (%)"),
                 MetricSpec("ACC", "max", "test accuracy on non-distractor queries (%)"),
                 MetricSpec("val.GAP", "max", "val GAP of the selected (K, t) (%)")),
        primary="GAP", paper_table="Table 5",
        description="Met exemplars as database; Met kNN classifier (per-class max cosine, exp(t s)) with K and t "
                    "tuned on val by GAP; raw CLS features (no PCA-whitening).")
    Options = MetOptions

    def _data(self, root: Path):
        return load_met(root, mini=self.options.mini)

    def dataset_fingerprint(self, data: Path) -> str:
        return self._data(data).fingerprint()

    def _ctx(self, ctx: RunContext) -> RunContext:
        # images of different sizes cannot be stacked into one batch
        return dataclasses.replace(ctx, batch_size=1) if self.options.image_size is None else ctx

    def validate(self, ctx: RunContext) -> dict:
        d = self._data(ctx.data)
        tf, _ = _transform(ctx.encoder.info, self.options.image_size)
        x = tf(d.database[0][0])
        out = ctx.encoder(x[None].to(ctx.device))
        return {"database": len(d.database), "classes": d.n_classes,
                **{f"{k}_queries": len(v) for k, v in d.queries.items()},
                "first_image_tensor": list(x.shape), "feature_dim": int(out.cls.shape[-1])}

    def run(self, ctx: RunContext) -> SuiteResult:
        o = self.options
        d = self._data(ctx.data)
        tf, tid = _transform(ctx.encoder.info, o.image_size)
        fctx = self._ctx(ctx)
        block = _last_block(ctx.encoder)
        fdb = _cls(fctx, d.database.with_transform(tf, tid), block, "database features")
        db_labels = np.asarray(d.database.labels)
        kmax = min(max(o.k_grid), len(db_labels))
        ks = sorted({min(k, kmax) for k in o.k_grid})

        def neighbours(split):
            fq = _cls(fctx, d.queries[split].with_transform(tf, tid), block, f"{split} features")
            idx, sims = rank_gallery(fq, fdb, chunk=o.chunk, topk=kmax, device=ctx.device, return_scores=True)
            return sims, db_labels[idx], np.asarray(d.queries[split].labels)

        vs, vl, vy = neighbours("val")
        tuning = tune_knn(vs, vl, vy, d.n_classes, ks, o.t_grid)
        ts, tl, ty = neighbours("test")
        preds, confs = knn_classify(ts, tl, tuning.t, d.n_classes, k=tuning.k)
        metrics = _pct(evaluate_met(preds, confs, ty))
        metrics["val.GAP"] = 100.0 * tuning.score
        details = {"n_database": len(db_labels), "n_classes": d.n_classes, "n_val": len(vy), "n_test": len(ty),
                   "test_distractors": int((ty == -1).sum()),
                   "val_grid": {f"K{k}_t{t}": 100.0 * s for (k, t), s in tuning.table.items()}}
        return SuiteResult(metrics=metrics, details=details,
                           selection={"knn": {"K": tuning.k, "t": tuning.t, "rule": "max GAP on val",
                                              "block": block}})


# ----------------------------------------------------------------------------------------------------
# AmsterTime
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AmsterTimeOptions:
    image_size: int = field(224, help="images resized to this square (paper A.7)")
    task_file: str | None = field(None, help="optional task CSV (e.g. tasks/retrieval_test.csv, relative to the "
                                             "data root or absolute) restricting queries and galleries")
    chunk: int = field(32768, hash=False, help="gallery rows per search chunk (memory only)")


class AmsterTimeSuite(Suite):
    spec = SuiteSpec(
        name="retrieval.amstertime", version="1", task="retrieval", heads=("cosine",),
        metrics=(MetricSpec("mAP", "max", "mAP over both directions, full gallery (%)"),
                 MetricSpec("top1", "max", "top-1 over both directions (%)"),
                 MetricSpec("top5", "max", "top-5 over both directions (%)"),
                 MetricSpec("mAP.old2new", "max", "archival queries vs street views (%)"),
                 MetricSpec("mAP.new2old", "max", "street-view queries vs archival images (%)")),
        primary="mAP", paper_table="Table 5",
        description="AmsterTime archival/street-view pairs, retrieval both ways over the full gallery (the "
                    "reference script's default k=1 would make mAP = top-1).")
    Options = AmsterTimeOptions

    def _data(self, root: Path):
        tf = self.options.task_file
        if tf is not None and not Path(tf).is_absolute():
            tf = Path(root) / tf
        return load_amstertime(root, tf)

    def dataset_fingerprint(self, data: Path) -> str:
        return self._data(data).fingerprint()

    def _sets(self, root: Path, info):
        d = self._data(root)
        tf, tid = _transform(info, self.options.image_size)
        return d, d.old.with_transform(tf, tid), d.new.with_transform(tf, tid)

    def validate(self, ctx: RunContext) -> dict:
        d, old, new = self._sets(ctx.data, ctx.encoder.info)
        out = ctx.encoder(torch.stack([old[0][0], new[0][0]]).to(ctx.device))
        return {"pairs": len(old), "feature_dim": int(out.cls.shape[-1])}

    def run(self, ctx: RunContext) -> SuiteResult:
        d, old, new = self._sets(ctx.data, ctx.encoder.info)
        block = _last_block(ctx.encoder)
        fo = _cls(ctx, old, block, "archival features")
        fn = _cls(ctx, new, block, "street-view features")
        o2n = rank_gallery(fo, fn, chunk=self.options.chunk, device=ctx.device)
        n2o = rank_gallery(fn, fo, chunk=self.options.chunk, device=ctx.device)
        metrics = _pct(evaluate_amstertime(o2n, n2o, old.labels, new.labels))
        return SuiteResult(metrics=metrics, selection={"cosine": {"block": block, "feature": "cls"}},
                           details={"n_old": len(old), "n_new": len(new)})
