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

from harness.config import ConfigError, field
from harness.errors import NoDefaultData
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from suites.retrieval.datasets import (MET_DISTRACTOR, RevisitedData, load_amstertime, load_met,
                                       load_revisited, make_transform)
from suites.retrieval.figures import labelled_strip, revisited_strip
from suites.retrieval.metrics import (MET_K_GRID, MET_T_GRID, compute_map, evaluate_amstertime,
                                      evaluate_met, knn_classify, random_ranking_floor, ranking_ap_topk,
                                      revisitop_protocol, tune_knn)
from suites.retrieval.search import rank_gallery


def _transform(info, image_size: int | None):
    return make_transform(image_size, info.mean, info.std, patch_size=info.patch_size,
                          interpolation=info.interpolation)


def _block(encoder, block: int) -> int:
    """The block whose CLS token is the descriptor (paper: the last, -1); out of range -> ConfigError."""
    try:
        return encoder.resolve_layers([block])[0]
    except ValueError as e:
        raise ConfigError(f"protocol.layer={block}: {e}") from None


_BLOCK_HELP = ("CLS token of this block (negative: from the end); the paper uses the last, -1. The demo "
               "reads a mid-depth block: the builtin DINOv2's last block was fine-tuned for saliency")


def _cls(ctx: RunContext, dataset, block: int, desc: str) -> np.ndarray:
    return ctx.features(dataset, [block], ("cls",), desc=desc)[f"cls.{block}"]


def _pct(d: dict[str, float]) -> dict[str, float]:
    return {k: 100.0 * v for k, v in d.items()}


def _unique_ids(names) -> list[str]:
    """Sample ids for per-query records: the query's name (``#<index>`` appended to a repeated name)."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [n if seen[n] == 1 else f"{n}#{i}" for i, n in enumerate(names)]


def _needs_data(name: str, layout: str):
    """A suite without embedded default data run without ``--data``: the core's NoDefaultData (a user
    error, exit 2; the demo skips the suite), naming the layout to pass."""
    raise NoDefaultData(f"suite {name} has no embedded default data: pass --data DIR with the dataset in "
                        f"its layout ({layout}; see suites/retrieval/README.md)")


# ----------------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RevisitedOptions:
    image_size: int = field(224, min=1, help="queries (cropped to bbx) and database images resized to this square")
    kappas: tuple[int, ...] = field((1, 5, 10), min=1, nonempty=True, help="mP@k cut-offs (revisitop: 1, 5, 10)")
    layer: int = field(-1, help=_BLOCK_HELP)
    chunk: int = field(32768, min=1, hash=False, help="gallery rows per search chunk (memory only)")


def _revisited_spec(name: str, title: str) -> SuiteSpec:
    ms = []
    for lv, word in (("H", "hard"), ("M", "medium"), ("E", "easy")):
        ms.append(MetricSpec(f"mAP.{lv}", "max", f"{title} {word} mAP (%)"))
        ms += [MetricSpec(f"mP{k}.{lv}", "max", f"{title} {word} mean precision@{k} (%)") for k in (1, 5, 10)]
    return SuiteSpec(name=name, version="2", task="retrieval", heads=("cosine",), metrics=tuple(ms),
                     primary="mAP.H", paper_table="Table 5",
                     description=f"{title}: cropped queries vs database, cosine of CLS at 224x224; "
                                 "revisitop mAP / mP@k, easy / medium / hard.")


class _RevisitedSuite(Suite):
    Options = RevisitedOptions
    dataset_name: ClassVar[str]

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        """``default``: 112 px (a quarter of 224 px's encoder cost; both revisited suites x 3 encoders stay
        within ~20 s on 2 cores) and the CLS of ``layer`` -7 (the 6th of 12 blocks: mid-depth), because the
        builtin DINOv2's last block was fine-tuned for saliency (its last-block CLS retrieves worse than a
        random ViT's on the world; per-block table in suites/retrieval/README.md). ``tiny``: the paper's."""
        return {} if preset == "tiny" else {"image_size": 112, "layer": -7}

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
        block = _block(ctx.encoder, self.options.layer)
        fq = _cls(ctx, q, block, "query features")
        fdb = _cls(ctx, db, block, "database features")
        ranks = rank_gallery(fq, fdb, chunk=self.options.chunk, device=ctx.device)
        result = self.score(ranks, d.gnd_dicts(), _unique_ids([g.name for g in d.gnd]), len(db),
                            self.options.kappas)
        result.selection = {"cosine": {"block": block, "feature": "cls"}}
        result.details.update({"dataset": d.name, "n_queries": len(q), "n_database": len(db), "block": block})
        result.figures["topk"] = revisited_strip(d, ranks)
        return result

    @staticmethod
    def score(ranks: np.ndarray, gnd: list[dict], ids: list[str], n_db: int, kappas) -> SuiteResult:
        """revisitop mAP / mP@k per setup, each with its per-query values, and the random-ranking floor
        (``floor.mAP.H`` ...: the exact expected value under a uniformly random ranking, per query)."""
        metrics: dict[str, float] = {}
        per_sample: dict[str, PerSample] = {}
        details: dict = {"floor": "expected value under a uniformly random ranking, computed exactly per query"}

        def put(name: str, values: np.ndarray, keep: np.ndarray, column: str) -> None:
            v = values[keep]
            metrics[name] = 100.0 * float(v.mean())
            per_sample[name] = PerSample([ids[i] for i in np.flatnonzero(keep)], v, reduce="mean", scale=100.0,
                                         columns=(column,))

        for level in ("hard", "medium", "easy"):
            proto = revisitop_protocol(gnd, level)
            res = compute_map(ranks, proto, kappas)
            f_ap, f_pk = random_ranking_floor(proto, n_db, res.kappas)
            keep = ~np.isnan(res.aps)          # queries with positives in this setup (the same for every encoder)
            tag = level[0].upper()
            put(f"mAP.{tag}", res.aps, keep, "AP")
            put(f"floor.mAP.{tag}", f_ap, keep, "expected AP")
            for c, k in enumerate(res.kappas):
                put(f"mP{k}.{tag}", res.pks[:, c], keep, f"P@{k}")
                put(f"floor.mP{k}.{tag}", f_pk[:, c], keep, f"expected P@{k}")
            details[f"ap.{level}"] = [None if np.isnan(a) else float(a) for a in res.aps]
            details[f"skipped_queries.{level}"] = int((~keep).sum())
        return SuiteResult(metrics=metrics, details=details, per_sample=per_sample)


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
    image_size: int | None = field(None, min=1, help="None: each side to the nearest multiple of the patch size "
                                                     "(paper A.7; images are then encoded one at a time)")
    mini: bool = field(False, help="use mini_MET_database.json")
    layer: int = field(-1, help=_BLOCK_HELP)
    k_grid: tuple[int, ...] = field(MET_K_GRID, min=1, nonempty=True,
                                    help="kNN K values tuned on val (Met reference grid)")
    t_grid: tuple[float, ...] = field(MET_T_GRID, min=0, min_open=True, nonempty=True,
                                      help="softmax temperatures tuned on val (Met reference grid)")
    chunk: int = field(32768, min=1, hash=False, help="gallery rows per search chunk (memory only)")


class MetSuite(Suite):
    spec = SuiteSpec(
        name="retrieval.met", version="2", task="retrieval", heads=("knn",),
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

    @classmethod
    def default_data(cls, workspace) -> Path:
        _needs_data(cls.spec.name, "ROOT/ground_truth/*.json + ROOT/images/")

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
        block = _block(ctx.encoder, self.options.layer)
        fdb = _cls(fctx, d.database.with_transform(tf, tid), block, "database features")
        db_labels = np.asarray(d.database.labels)
        kmax = min(max(o.k_grid), len(db_labels))
        ks = sorted({min(k, kmax) for k in o.k_grid})

        def neighbours(split):
            fq = _cls(fctx, d.queries[split].with_transform(tf, tid), block, f"{split} features")
            idx, sims = rank_gallery(fq, fdb, chunk=o.chunk, topk=kmax, device=ctx.device, return_scores=True)
            return sims, db_labels[idx], np.asarray(d.queries[split].labels), idx

        vs, vl, vy, _ = neighbours("val")
        tuning = tune_knn(vs, vl, vy, d.n_classes, ks, o.t_grid)
        ts, tl, ty, t_idx = neighbours("test")
        preds, confs = knn_classify(ts, tl, tuning.t, d.n_classes, k=tuning.k)
        metrics = _pct(evaluate_met(preds, confs, ty))
        metrics["val.GAP"] = 100.0 * tuning.score
        ids = _unique_ids([r.relpath for r in d.queries["test"].records])
        real = ty != -1
        right = (np.asarray(preds) == ty) & real
        rows = np.stack([np.asarray(confs, dtype=np.float64), right, real], axis=1)
        cols = ("confidence", "correct", "counted")
        per_sample = {"GAP": PerSample(ids, rows, reduce="gap", scale=100.0, columns=cols),
                      "GAP.nodistr": PerSample([i for i, r in zip(ids, real) if r], rows[real], reduce="gap",
                                               scale=100.0, columns=cols),
                      "ACC": PerSample([i for i, r in zip(ids, real) if r], right[real].astype(np.float64),
                                       reduce="mean", scale=100.0, columns=("correct",))}
        details = {"n_database": len(db_labels), "n_classes": d.n_classes, "n_val": len(vy), "n_test": len(ty),
                   "test_distractors": int((ty == -1).sum()),
                   "val_grid": {f"K{k}_t{t}": 100.0 * s for (k, t), s in tuning.table.items()}}
        strip = labelled_strip("Met test", d.queries["test"], d.database, t_idx, skip_label=MET_DISTRACTOR)
        return SuiteResult(metrics=metrics, details=details, per_sample=per_sample,
                           selection={"knn": {"K": tuning.k, "t": tuning.t, "rule": "max GAP on val",
                                              "block": block}},
                           figures={"topk": strip} if strip is not None else {})


# ----------------------------------------------------------------------------------------------------
# AmsterTime
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AmsterTimeOptions:
    image_size: int = field(224, min=1, help="images resized to this square (paper A.7)")
    layer: int = field(-1, help=_BLOCK_HELP)
    task_file: str | None = field(None, help="optional task CSV (e.g. tasks/retrieval_test.csv, relative to the "
                                             "data root or absolute) restricting queries and galleries")
    chunk: int = field(32768, min=1, hash=False, help="gallery rows per search chunk (memory only)")


class AmsterTimeSuite(Suite):
    spec = SuiteSpec(
        name="retrieval.amstertime", version="2", task="retrieval", heads=("cosine",),
        metrics=(MetricSpec("mAP", "max", "mAP over both directions, full gallery (%)"),
                 MetricSpec("top1", "max", "top-1 over both directions (%)"),
                 MetricSpec("top5", "max", "top-5 over both directions (%)"),
                 MetricSpec("mAP.old2new", "max", "archival queries vs street views (%)"),
                 MetricSpec("mAP.new2old", "max", "street-view queries vs archival images (%)")),
        primary="mAP", paper_table="Table 5",
        description="AmsterTime archival/street-view pairs, retrieval both ways over the full gallery (the "
                    "reference script's default k=1 would make mAP = top-1).")
    Options = AmsterTimeOptions

    @classmethod
    def default_data(cls, workspace) -> Path:
        _needs_data(cls.spec.name, "ROOT/old/*.jpg + ROOT/new/*.png")

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
        block = _block(ctx.encoder, self.options.layer)
        fo = _cls(ctx, old, block, "archival features")
        fn = _cls(ctx, new, block, "street-view features")
        o2n = rank_gallery(fo, fn, chunk=self.options.chunk, device=ctx.device)
        n2o = rank_gallery(fn, fo, chunk=self.options.chunk, device=ctx.device)
        metrics = _pct(evaluate_amstertime(o2n, n2o, old.labels, new.labels))
        ap_o, _, _ = ranking_ap_topk(o2n, old.labels, new.labels)
        ap_n, _, _ = ranking_ap_topk(n2o, new.labels, old.labels)
        ids_o = [r.relpath for r in old.records]     # old/<stem>.jpg, new/<stem>.png
        ids_n = [r.relpath for r in new.records]
        per_sample = {"mAP": PerSample(_unique_ids(ids_o + ids_n), np.concatenate([ap_o, ap_n]), scale=100.0,
                                       columns=("AP",)),
                      "mAP.old2new": PerSample(_unique_ids(ids_o), ap_o, scale=100.0, columns=("AP",)),
                      "mAP.new2old": PerSample(_unique_ids(ids_n), ap_n, scale=100.0, columns=("AP",))}
        return SuiteResult(metrics=metrics, selection={"cosine": {"block": block, "feature": "cls"}},
                           details={"n_old": len(old), "n_new": len(new)}, per_sample=per_sample,
                           figures={"topk": labelled_strip("AmsterTime archival -> street view", old, new, o2n)})
