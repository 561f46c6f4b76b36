"""Semantic segmentation with frozen encoders (paper Table 2): ADE20K and Pascal VOC 2012, linear and +ms.

Protocol (DINOv2 segmentation configs, through mmsegmentation 1.2.2 + mmengine): a BatchNorm + 1x1 conv
head (``BNHead``) on the last layer's patch tokens (linear) or on the last 4 layers concatenated (+ms);
AdamW (lr 1e-3, wd 1e-4), poly schedule with 1,500 warm-up iterations, 40k iterations of batch 16;
random resize (0.5-2.0 / +ms 1.0-3.0) + crop 512 (+ms 640) + flip + photometric distortion; slide
inference (512 / stride 341; +ms 640 / 320) at scales [1.0, 1.32, 1.73, 2.28, 3.0] with flip for +ms;
mIoU from mmseg's ``IoUMetric``. ``exact`` mode runs that pipeline on the fly; ``fast`` mode trains on
cached features of fixed crops (see ``windows.py``). Several learning rates can train in one pass
(``lr_grid``); the head is then selected on a held-out part of train and reported on val.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import torch

from harness.config import ConfigError
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.grid import select
from suites.images import DataError
from suites.segmentation.figures import per_class_iou
from suites.segmentation.options import SegOptions
from suites.segmentation.records import seg_samples
from suites.segmentation.training import SegTraining


class SegmentationSuite(SegTraining, Suite):
    Options = SegOptions
    dataset: ClassVar[str]
    train_split: ClassVar[str]
    val_split: ClassVar[str]

    # -- data ------------------------------------------------------------------------------------
    def read(self, data: Path, split: str):
        raise NotImplementedError

    def splits(self, data: Path):
        return self.read(data, self.train_split), self.read(data, self.val_split)

    def dataset_fingerprint(self, data: Path) -> str:
        train, val = self.splits(data)
        return f"{train.fingerprint()}-{val.fingerprint()}"

    @classmethod
    def search_space(cls):
        # paper App. A.3: lr searched in 1e-4..1e-1 (log). The mapping form: harness.commands.sweep.parse_space
        # reads a tuple spec as a list of categorical values.
        return {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        """CPU sizes. The head trains on cached windows with the loss on the patch grid (no upsampled
        150-class logits), so a step costs a few ms and the head converges; +ms uses the linear windows
        (one shared cache entry), one scale and no flip. Sized from the held-out curve (README)."""
        if preset == "tiny":
            return {"iters": 30, "batch_size": 8, "warmup_iters": 3, "lr": 1e-2, "crop_size": 64, "stride": 43,
                    "scale": 64, "loss_resolution": "patch", "ms_crop_size": 64, "ms_stride": 43, "ms_scale": 64,
                    "ms_test_ratios": [1.0], "ms_flip": False, "log_every": 10}
        return {"iters": 300, "batch_size": 16, "warmup_iters": 20, "lr": 1e-2, "crop_size": 168, "stride": 112,
                "scale": 168, "loss_resolution": "patch", "ms_crop_size": 168, "ms_stride": 112, "ms_scale": 168,
                "ms_test_ratios": [1.0], "ms_flip": False, "log_every": 50}

    @classmethod
    def demo_heads(cls, preset: str) -> str:
        """Linear only on ``default``: the primary metric is the linear mIoU, and the +ms head (~3.5x a linear
        step, its own val pass) would add ~60 % per encoder to a budget it barely fits; both on ``tiny``."""
        return "linear,ms" if preset == "tiny" else "linear"

    # -- protocol --------------------------------------------------------------------------------
    def geometry(self, head: str, encoder):
        from suites.segmentation.protocol import HeadGeometry, check_layers
        o = self.options
        if head == "linear":
            geo = HeadGeometry("linear", (-1,), o.crop_size, o.stride, o.scale, tuple(o.ratio_range), (1.0,), False)
        elif head == "ms":
            if o.ms_layers < 1:
                raise DataError(f"head 'ms': ms_layers must be >= 1, got {o.ms_layers}")
            if o.ms_layers > encoder.info.num_layers:
                raise DataError(f"head 'ms' needs the last {o.ms_layers} layers but encoder '{encoder.info.spec}' "
                                f"has only {encoder.info.num_layers} blocks")
            geo = HeadGeometry("ms", tuple(range(-o.ms_layers, 0)), o.ms_crop_size, o.ms_stride, o.ms_scale,
                               tuple(o.ms_ratio_range), tuple(o.ms_test_ratios), o.ms_flip)
        else:
            raise DataError(f"suite {self.spec.name} has no head '{head}'")
        check_layers(encoder, geo.layers, head)
        for name, v in (("crop", geo.crop), ("stride", geo.stride), ("scale", geo.scale)):
            if v <= 0:
                raise DataError(f"head '{head}': {name} must be positive, got {v}")
        return geo

    def lrs(self) -> tuple[float, ...]:
        return tuple(self.options.lr_grid) or (self.options.lr,)

    def _holdout(self, n: int, seed: int) -> tuple[list[int], list[int]]:
        """A seeded image-level split (at least one image each side): the held-out part selects among lr
        heads and is the validation metric sweeps optimise, so it exists with one lr too."""
        if n < 2:
            raise DataError(f"segmentation needs at least 2 training images to hold one out, got {n}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g).tolist()
        k = min(max(1, int(round(n * self.options.holdout_fraction))), n - 1)
        return sorted(perm[k:]), sorted(perm[:k])

    # -- harness entry points ----------------------------------------------------------------------
    def validate(self, ctx: RunContext) -> dict:
        from suites.segmentation.mmseg_compat import import_mmseg
        from suites.segmentation.protocol import build_segmentor, train_pipeline
        ns = import_mmseg()
        train, val = self.splits(ctx.data)
        report = {"train_images": len(train), "val_images": len(val), "train_split": train.source,
                  "num_classes": train.num_classes, "mmseg": ns.versions, "mmcv_ops_shim": ns.shim}
        for head in ctx.heads:
            geo = self.geometry(head, ctx.encoder)
            model = build_segmentor(ctx.encoder, geo, train.num_classes, len(self.lrs()), ctx.precision).to(ctx.device)
            ds = train.build(train_pipeline(geo, train.num_classes, train.dataset, self.options.cat_max_ratio,
                                            self.options.photometric), indices=[0])
            data = model.data_preprocessor(ns.pseudo_collate([ds[0]]), training=True)
            feats = model.backbone(data["inputs"])
            logits = model.decode_head(feats)
            report[head] = {"layers": list(geo.layers), "input": list(data["inputs"].shape),
                            "features": [list(f.shape) for f in feats], "logits": list(logits.shape)}
        return report

    def policy(self) -> str:
        """How held-out train is used: 'full' (nothing to select: no hold-out), 'holdout' or 'refit'."""
        sel = self.options.selection
        if sel == "auto":
            return "full" if len(self.lrs()) == 1 else "refit"
        return sel

    def run(self, ctx: RunContext) -> SuiteResult:
        from suites.segmentation.inference import cell_counts, majority_floor, prior_map_floor
        from suites.segmentation.mmseg_compat import import_mmseg
        ns = import_mmseg()
        o = self.options
        train, val = self.splits(ctx.data)
        for head in ctx.heads:              # a head the encoder cannot serve stops before any work
            self.geometry(head, ctx.encoder)
        lrs = self.lrs()
        policy = self.policy()
        if policy == "full" and ctx.on_intermediate is not None:
            raise ConfigError(f"{self.spec.name}: a sweep optimises '{self.spec.validation}' on held-out train, but "
                              f"with one lr and protocol.selection=auto nothing is held out; pass "
                              f"protocol.selection=refit (or holdout)")
        if policy == "full":
            fit_idx, hold_idx = list(range(len(train))), []
        else:
            fit_idx, hold_idx = self._holdout(len(train), ctx.seed)
        val_idx = list(range(min(len(val), o.max_val_images))) if o.max_val_images else None
        metrics: dict[str, float] = {}
        per_sample: dict[str, PerSample] = {}
        selection: dict = {}
        details: dict = {"n_train": len(train), "n_val": len(val) if val_idx is None else len(val_idx),
                         "train_split": train.source, "val_split": val.source, "n_fit": len(fit_idx),
                         "n_holdout": len(hold_idx), "num_classes": train.num_classes, "lrs": list(lrs),
                         "selection_policy": policy, "mmseg": ns.versions, "mmcv_ops_shim": ns.shim, "heads": {}}
        # the floor: encoder-independent, label maps only (no encoder forward)
        t0 = time.perf_counter()
        cells = cell_counts(train)                       # the training label maps are read once for both floors
        major, floor = majority_floor(train, val, val_idx, counts=cells.sum((0, 1)))
        for k in ("mIoU", "aAcc", "mAcc"):
            metrics[f"floor.{k}"] = floor[k]
        per_sample.update({f"floor.{k}": v for k, v in seg_samples(floor).items()})
        _, floor_map = prior_map_floor(train, val, val_idx, counts=cells)
        for k in ("mIoU", "aAcc", "mAcc"):
            metrics[f"floor_map.{k}"] = floor_map[k]
        per_sample.update({f"floor_map.{k}": v for k, v in seg_samples(floor_map).items()})
        details["floor"] = {"rule": "floor = the majority class of the training labels predicted at every pixel; "
                                    "floor_map = each pixel's most frequent training class at its place "
                                    "(normalised coordinates, no image content)",
                            "class": major, "seconds": round(time.perf_counter() - t0, 2)}
        for n, head in enumerate(ctx.heads):
            out = self._run_head(ctx, head, train, val, fit_idx, hold_idx, val_idx, lrs, policy)
            for k, v in out["metrics"].items():
                metrics[f"{head}.{k}"] = v
                if n == 0 and k in ("mIoU", "aAcc", "mAcc", "holdout_mIoU"):
                    metrics[k] = v
            for k, v in out["per_sample"].items():
                per_sample[f"{head}.{k}"] = v
                if n == 0:
                    per_sample[k] = v
            selection[head] = out["selection"]
            details["heads"][head] = out["details"]
        first = ctx.heads[0]
        figure = per_class_iou(details["heads"][first]["val_per_class_iou"], floor["IoU"],
                               f"{first} (lr {selection[first]['lr']:g}) per-class val IoU, {ctx.encoder.info.spec}")
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample,
                           figures={"per_class_iou": figure})

    # -- one head ----------------------------------------------------------------------------------
    def _run_head(self, ctx, head, train, val, fit_idx, hold_idx, val_idx, lrs, policy) -> dict:
        from suites.segmentation.inference import evaluate
        o = self.options
        geo = self.geometry(head, ctx.encoder)
        enc = ctx.encoder.to(ctx.device).eval()
        wb = max(1, ctx.batch_size)
        model, fit = self._train(ctx, head, geo, train, fit_idx, lrs, curve_idx=hold_idx, tag=head)
        metrics: dict[str, float] = {}
        best, hold_res = 0, None
        if hold_idx:
            # the held-out part of train selects among lr heads and is what sweeps optimise (never val)
            hold_res = evaluate(model, train, hold_idx, geo, enc.info, window_batch=wb, progress=ctx.progress,
                                desc=f"{head} holdout")
            best = select([r["mIoU"] for r in hold_res], "max")   # first best: ties -> smaller index
            metrics["holdout_mIoU"] = hold_res[best]["mIoU"]
            if len(lrs) > 1:
                for lr, hr in zip(lrs, hold_res):
                    metrics[f"lr{lr:g}.holdout_mIoU"] = hr["mIoU"]
        refit = None
        if policy == "refit":
            model, refit = self._train(ctx, head, geo, train, list(range(len(train))), (lrs[best],), curve_idx=[],
                                       tag=f"{head}.refit")
            k_report = 0
        else:
            k_report = best
        t1 = time.perf_counter()
        val_res = evaluate(model, val, val_idx, geo, enc.info, window_batch=wb, progress=ctx.progress,
                           desc=f"{head} val")
        eval_s = time.perf_counter() - t1
        if policy == "holdout" and len(lrs) > 1:
            for lr, vr in zip(lrs, val_res):
                metrics[f"lr{lr:g}.mIoU"] = vr["mIoU"]
        for k in ("mIoU", "aAcc", "mAcc"):
            metrics[k] = val_res[k_report][k]
        metrics["n_heads"] = float(len(lrs))
        rules = {"full": "single lr: nothing to select, no hold-out; trained on the full train split",
                 "holdout": f"max mIoU on {len(hold_idx)} held-out train images; reported head trained on the "
                            f"other {len(fit_idx)}",
                 "refit": f"max mIoU on {len(hold_idx)} held-out train images, then the chosen lr retrained on the "
                          f"full train split ({len(train)} images)"}
        selection = {"lr": lrs[best], "policy": policy, "rule": rules[policy], "iterations": o.iters,
                     "trained_on_images": len(train) if policy in ("full", "refit") else len(fit_idx),
                     "held_out_images": len(hold_idx)}
        details = {"layers": list(geo.layers), "crop": geo.crop, "stride": geo.stride, "scale": geo.scale,
                   "test_ratios": list(geo.test_ratios), "flip": geo.flip, "mode": ctx.mode,
                   "loss_resolution": o.loss_resolution, **fit, "eval_seconds": round(eval_s, 2),
                   "val_per_class_iou": val_res[k_report]["IoU"], "val_images": val_res[k_report]["n_images"]}
        if refit is not None:
            details["refit"] = refit
        return {"metrics": metrics, "selection": selection, "details": details,
                "per_sample": seg_samples(val_res[k_report])}


class ADE20KSuite(SegmentationSuite):
    spec = SuiteSpec(
        name="seg.ade20k", version="3", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
        metrics=(MetricSpec("mIoU", "max", "val mean IoU over the 150 classes (%)"),
                 MetricSpec("aAcc", "max", "val pixel accuracy (%)"),
                 MetricSpec("mAcc", "max", "val mean class accuracy (%)")),
        primary="mIoU", validation="holdout_mIoU", paper_table="Table 2",
        description="ADE20K (mmseg layout, reduce_zero_label, 150 classes); DINOv2 BNHead linear / +ms, "
                    "AdamW + poly 40k iters, slide inference; mmseg IoUMetric.")
    dataset = "ade20k"
    train_split, val_split = "training", "validation"

    def read(self, data: Path, split: str):
        from suites.segmentation.datasets import read_ade20k
        return read_ade20k(data, split)

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import ade20k_root
        return ade20k_root(workspace)


class VOCSuite(SegmentationSuite):
    spec = SuiteSpec(
        name="seg.voc", version="3", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
        metrics=(MetricSpec("mIoU", "max", "val mean IoU over the 21 classes (%)"),
                 MetricSpec("aAcc", "max", "val pixel accuracy (%)"),
                 MetricSpec("mAcc", "max", "val mean class accuracy (%)")),
        primary="mIoU", validation="holdout_mIoU", paper_table="Table 2",
        description="Pascal VOC 2012 (mmseg layout, trainaug when present, 21 classes, 255 ignored); DINOv2 "
                    "BNHead linear / +ms, AdamW + poly 40k iters, slide inference; mmseg IoUMetric.")
    dataset = "voc"
    train_split, val_split = "train", "val"

    def read(self, data: Path, split: str):
        from suites.segmentation.datasets import read_voc
        return read_voc(data, split, prefer_aug=self.options.prefer_aug)

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import voc_root
        return voc_root(workspace)
