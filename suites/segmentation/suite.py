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
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
import torch

from harness.config import field
from harness.device import seed_everything
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from suites.images import DataError

PAPER_TEST_RATIOS = (1.0, 1.32, 1.73, 2.28, 3.0)


@dataclass(frozen=True)
class SegOptions:
    # schedule (DINOv2 linear / +ms segmentation configs)
    iters: int = field(40000, help="training iterations (DINOv2: 40k)")
    batch_size: int = field(16, help="crops per iteration (DINOv2: 2 per GPU x 8 GPUs)")
    lr: float = field(1e-3, help="AdamW learning rate (DINOv2: 1e-3)")
    lr_grid: tuple[float, ...] = field((), help="train one head per lr in the same pass (replaces lr) and "
                                                "select on held-out train; empty = the single lr")
    weight_decay: float = field(1e-4, help="AdamW weight decay (DINOv2: 1e-4; DINOv3: 1e-3)")
    betas: tuple[float, float] = field((0.9, 0.999), help="AdamW betas")
    warmup_iters: int = field(1500, help="linear warm-up iterations (mmcv 'linear', ratio warmup_ratio)")
    warmup_ratio: float = field(1e-6, help="lr factor at iteration 0 of the warm-up")
    poly_power: float = field(1.0, help="poly decay power over all iterations")
    min_lr: float = field(0.0, help="poly floor")
    holdout_fraction: float = field(0.1, help="part of train held out to select among lr_grid heads (and "
                                                  "the validation metric of sweeps)")
    # linear head geometry
    crop_size: int = field(512, help="linear: training crop and slide window")
    stride: int = field(341, help="linear: slide stride")
    scale: int = field(512, help="linear: short side of the resize (long side <= 4x: mmseg's (2048, 512))")
    ratio_range: tuple[float, float] = field((0.5, 2.0), help="linear: random resize ratio range")
    # +ms head geometry
    ms_layers: int = field(4, help="+ms: last n layers concatenated")
    ms_crop_size: int = field(640, help="+ms: training crop and slide window")
    ms_stride: int = field(320, help="+ms: slide stride")
    ms_scale: int = field(640, help="+ms: short side of the base resize (long side <= 4x)")
    ms_ratio_range: tuple[float, float] = field((1.0, 3.0), help="+ms: random resize ratio range")
    ms_test_ratios: tuple[float, ...] = field(PAPER_TEST_RATIOS, help="+ms: test-time scales")
    ms_flip: bool = field(True, help="+ms: test-time horizontal flip")
    # augmentation / data
    cat_max_ratio: float = field(0.75, help="RandomCrop: max share of one class in a crop")
    photometric: bool = field(True, help="PhotoMetricDistortion at training (exact mode)")
    prefer_aug: bool = field(True, help="VOC: train on trainaug.txt + SegmentationClassAug when present")
    max_val_images: int | None = field(None, help="evaluate on the first n val images only (smoke runs)")
    log_every: int = field(50, hash=False, help="log the training loss every n iterations")


class SegmentationSuite(Suite):
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
        # paper App. A.3: lr searched in 1e-4..1e-1 (log). The mapping form: harness.sweep.parse_space
        # reads a tuple spec as a list of categorical values.
        return {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        if preset == "tiny":
            return {"iters": 30, "batch_size": 8, "warmup_iters": 3, "crop_size": 64, "stride": 43, "scale": 64,
                    "ms_crop_size": 64, "ms_stride": 32, "ms_scale": 64, "ms_test_ratios": [1.0, 1.5],
                    "log_every": 10}
        # on a CPU each head's full-resolution logits cost as much as the encoder: small crops, 100 steps
        return {"iters": 60, "batch_size": 8, "warmup_iters": 6, "crop_size": 112, "stride": 75, "scale": 112,
                "ms_crop_size": 112, "ms_stride": 56, "ms_scale": 112, "ms_test_ratios": [1.0, 1.5],
                "log_every": 25}

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

    def run(self, ctx: RunContext) -> SuiteResult:
        from suites.segmentation.mmseg_compat import import_mmseg
        ns = import_mmseg()
        o = self.options
        train, val = self.splits(ctx.data)
        fit_idx, hold_idx = self._holdout(len(train), ctx.seed)
        val_idx = list(range(min(len(val), o.max_val_images))) if o.max_val_images else None
        lrs = self.lrs()
        metrics: dict[str, float] = {}
        selection: dict = {}
        details: dict = {"n_train": len(train), "n_val": len(val) if val_idx is None else len(val_idx),
                         "train_split": train.source, "val_split": val.source, "n_fit": len(fit_idx),
                         "n_holdout": len(hold_idx), "num_classes": train.num_classes, "lrs": list(lrs),
                         "mmseg": ns.versions, "mmcv_ops_shim": ns.shim, "heads": {}}
        for n, head in enumerate(ctx.heads):
            out = self._run_head(ctx, head, train, val, fit_idx, hold_idx, val_idx, lrs)
            for k, v in out["metrics"].items():
                metrics[f"{head}.{k}"] = v
                if n == 0 and k in ("mIoU", "aAcc", "mAcc", "holdout_mIoU"):
                    metrics[k] = v
            selection[head] = out["selection"]
            details["heads"][head] = out["details"]
        return SuiteResult(metrics=metrics, selection=selection, details=details)

    # -- one head ----------------------------------------------------------------------------------
    def _run_head(self, ctx, head, train, val, fit_idx, hold_idx, val_idx, lrs) -> dict:
        from heads.segmentation import train_heads
        from suites.segmentation.inference import evaluate
        from suites.segmentation.protocol import build_segmentor
        o = self.options
        gen = seed_everything(ctx.seed)
        geo = self.geometry(head, ctx.encoder)
        enc = ctx.encoder.to(ctx.device).eval()
        model = build_segmentor(enc, geo, train.num_classes, len(lrs), ctx.precision, seed=ctx.seed).to(ctx.device)
        dh = model.decode_head
        t0 = time.perf_counter()
        if ctx.mode == "fast":
            batches, n_items, extra = self._fast_batches(ctx, model, geo, train, fit_idx, gen)
        else:
            batches, n_items, extra = self._exact_batches(ctx, model, geo, train, fit_idx, gen)

        def on_step(step, losses):
            if step % max(1, o.log_every) == 0 or step == o.iters - 1:
                ctx.log_curve({f"{head}.train_loss": float(np.mean(losses))}, step)

        last = train_heads(dh.heads, batches, dh.loss_single, lrs, o.iters, weight_decay=o.weight_decay,
                           betas=tuple(o.betas), warmup_iters=o.warmup_iters, warmup_ratio=o.warmup_ratio,
                           power=o.poly_power, min_lr=o.min_lr, on_step=on_step)
        train_s = time.perf_counter() - t0
        wb = max(1, ctx.batch_size)
        t1 = time.perf_counter()
        val_res = evaluate(model, val, val_idx, geo, enc.info, window_batch=wb, progress=ctx.progress,
                           desc=f"{head} val")
        eval_s = time.perf_counter() - t1
        metrics: dict[str, float] = {}
        best = 0
        hold_res = None
        # the held-out part of train selects among lr heads and is what sweeps optimise (never val)
        hold_res = evaluate(model, train, hold_idx, geo, enc.info, window_batch=wb, progress=ctx.progress,
                            desc=f"{head} holdout")
        best = int(np.nanargmax([r["mIoU"] for r in hold_res]))   # first best: ties -> smaller index
        if len(lrs) > 1:
            for lr, hr, vr in zip(lrs, hold_res, val_res):
                metrics[f"lr{lr:g}.mIoU"] = vr["mIoU"]
                metrics[f"lr{lr:g}.holdout_mIoU"] = hr["mIoU"]
        metrics["holdout_mIoU"] = hold_res[best]["mIoU"]
        for k in ("mIoU", "aAcc", "mAcc"):
            metrics[k] = val_res[best][k]
        metrics["n_heads"] = float(len(lrs))
        selection = {"lr": lrs[best], "rule": "max mIoU on held-out train" if len(lrs) > 1 else "single lr",
                     "iterations": o.iters}
        details = {"layers": list(geo.layers), "crop": geo.crop, "stride": geo.stride, "scale": geo.scale,
                   "test_ratios": list(geo.test_ratios), "flip": geo.flip, "mode": ctx.mode,
                   "train_items": n_items, "train_seconds": round(train_s, 2), "eval_seconds": round(eval_s, 2),
                   "final_train_loss": last, "val_per_class_iou": val_res[best]["IoU"],
                   "val_images": val_res[best]["n_images"], **extra}
        return {"metrics": metrics, "selection": selection, "details": details}

    def _fast_batches(self, ctx, model, geo, train, fit_idx, gen):
        from suites.segmentation.windows import WindowSet, labels_key
        enc = ctx.encoder
        ws = WindowSet(train, fit_idx, geo, enc.info)
        feats = ctx.features(ws, list(geo.layers), kinds=("patches",), desc=f"{geo.name} train windows")
        labels = ws.labels(ctx.cache.root, labels_key(feats.key, ws))
        blocks = sorted(set(enc.resolve_layers(geo.layers)))
        arrays = [feats[f"patches.{b}"] for b in blocks]
        n = len(ws)
        bs = min(self.options.batch_size, n)
        dh, dev = model.decode_head, ctx.device

        def batches() -> Iterator:
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n - bs + 1, bs):
                idx = np.sort(perm[s:s + bs].numpy())
                maps = [torch.from_numpy(np.asarray(a[idx], dtype=np.float32)).permute(0, 3, 1, 2).to(dev)
                        for a in arrays]
                target = torch.from_numpy(np.asarray(labels[idx], dtype=np.int64)).to(dev)
                yield dh.features(maps), target

        return batches, n, {"windows": n, "features_cache": feats.key, "features_computed": feats.computed}

    def _exact_batches(self, ctx, model, geo, train, fit_idx, gen):
        from suites.segmentation.mmseg_compat import import_mmseg
        from suites.segmentation.protocol import train_pipeline
        ns = import_mmseg()
        o = self.options
        ds = train.build(train_pipeline(geo, train.num_classes, train.dataset, o.cat_max_ratio, o.photometric),
                         indices=fit_idx)
        bs = min(o.batch_size, len(ds))
        sampler = _InfiniteShuffle(len(ds), gen)
        loader = torch.utils.data.DataLoader(ds, batch_size=bs, sampler=sampler, collate_fn=ns.pseudo_collate,
                                             num_workers=ctx.num_workers, worker_init_fn=_seed_worker,
                                             persistent_workers=False, drop_last=True)
        dh = model.decode_head

        def batches() -> Iterator:
            for data in loader:
                data = model.data_preprocessor(data, training=True)
                yield dh.features(model.backbone(data["inputs"])), dh.stack_labels(data["data_samples"])

        return batches, len(ds), {"images": len(ds)}


class _InfiniteShuffle(torch.utils.data.Sampler):
    """Endless epochs, each a fresh permutation (mmengine's InfiniteSampler without distribution)."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        while True:
            yield from torch.randperm(self.n, generator=self.generator).tolist()

    def __len__(self) -> int:
        return 2 ** 62


def _seed_worker(worker_id: int) -> None:
    import random
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


class ADE20KSuite(SegmentationSuite):
    spec = SuiteSpec(
        name="seg.ade20k", version="1", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
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
        name="seg.voc", version="1", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
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
