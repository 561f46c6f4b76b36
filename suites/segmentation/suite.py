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
from typing import ClassVar, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import ConfigError, field
from harness.device import seed_everything
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from suites.images import DataError

PAPER_TEST_RATIOS = (1.0, 1.32, 1.73, 2.28, 3.0)


@dataclass(frozen=True)
class SegOptions:
    # schedule (DINOv2 linear / +ms segmentation configs)
    iters: int = field(40000, min=1, help="training iterations (DINOv2: 40k)")
    batch_size: int = field(16, min=1, help="crops per iteration (DINOv2: 2 per GPU x 8 GPUs)")
    lr: float = field(1e-3, min=0, min_open=True, help="AdamW learning rate (DINOv2: 1e-3)")
    lr_grid: tuple[float, ...] = field((), min=0, min_open=True,
                                       help="train one head per lr in the same pass (replaces lr) and select on "
                                            "held-out train; empty = the single lr")
    weight_decay: float = field(1e-4, min=0, help="AdamW weight decay (DINOv2: 1e-4; DINOv3: 1e-3)")
    betas: tuple[float, float] = field((0.9, 0.999), min=0, max=1, max_open=True, help="AdamW betas")
    warmup_iters: int = field(1500, min=0, help="linear warm-up iterations (mmcv 'linear', ratio warmup_ratio)")
    warmup_ratio: float = field(1e-6, min=0, max=1, help="lr factor at iteration 0 of the warm-up")
    poly_power: float = field(1.0, min=0, help="poly decay power over all iterations")
    min_lr: float = field(0.0, min=0, help="poly floor")
    selection: Literal["auto", "holdout", "refit"] = field(
        "auto", help="held-out selection: 'auto' = no hold-out when there is nothing to select (one lr: the head "
                     "trains on the full train split, no holdout_mIoU), 'refit' with an lr grid; 'refit' = select on "
                     "holdout_fraction of train, then retrain the chosen lr on the full train split (what sweeps "
                     "need: holdout_mIoU); 'holdout' = report the head trained on the rest (the pre-v2 behaviour)")
    holdout_fraction: float = field(0.1, min=0, max=1, min_open=True, max_open=True,
                                    help="part of train held out to select among lr_grid heads (and the validation "
                                         "metric of sweeps)")
    loss_resolution: Literal["label", "patch"] = field(
        "label", help="'label' = mmseg: logits upsampled to the label size; 'patch' = labels sampled at the centre "
                      "of each patch and the loss taken on the feature grid (cheap: the demo's CPU choice)")
    curve_every: int = field(0, min=0, help="fast mode: every n iterations log the held-out mIoU of the training "
                                            "windows (<head>.curve.holdout_mIoU; needs a hold-out); 0 = off")
    # linear head geometry
    crop_size: int = field(512, min=1, help="linear: training crop and slide window")
    stride: int = field(341, min=1, help="linear: slide stride")
    scale: int = field(512, min=1, help="linear: short side of the resize (long side <= 4x: mmseg's (2048, 512))")
    ratio_range: tuple[float, float] = field((0.5, 2.0), min=0, min_open=True,
                                             help="linear: random resize ratio range")
    # +ms head geometry
    ms_layers: int = field(4, min=1, help="+ms: last n layers concatenated")
    ms_crop_size: int = field(640, min=1, help="+ms: training crop and slide window")
    ms_stride: int = field(320, min=1, help="+ms: slide stride")
    ms_scale: int = field(640, min=1, help="+ms: short side of the base resize (long side <= 4x)")
    ms_ratio_range: tuple[float, float] = field((1.0, 3.0), min=0, min_open=True,
                                                help="+ms: random resize ratio range")
    ms_test_ratios: tuple[float, ...] = field(PAPER_TEST_RATIOS, min=0, min_open=True, nonempty=True,
                                              help="+ms: test-time scales")
    ms_flip: bool = field(True, help="+ms: test-time horizontal flip")
    # augmentation / data
    cat_max_ratio: float = field(0.75, min=0, max=1, min_open=True, help="RandomCrop: max share of one class in a crop")
    photometric: bool = field(True, help="PhotoMetricDistortion at training (exact mode)")
    prefer_aug: bool = field(True, help="VOC: train on trainaug.txt + SegmentationClassAug when present")
    max_val_images: int | None = field(None, min=1, help="evaluate on the first n val images only (smoke runs)")
    log_every: int = field(50, min=1, hash=False, help="log the training loss every n iterations")


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
        from suites.segmentation.inference import majority_floor
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
        major, floor = majority_floor(train, val, val_idx)
        for k in ("mIoU", "aAcc", "mAcc"):
            metrics[f"floor.{k}"] = floor[k]
        per_sample.update({f"floor.{k}": v for k, v in seg_samples(floor).items()})
        details["floor"] = {"rule": "the majority class of the training labels predicted at every pixel",
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
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)

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
            best = int(np.nanargmax([r["mIoU"] for r in hold_res]))   # first best: ties -> smaller index
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

    def _train(self, ctx, head, geo, train, idx, lrs, *, curve_idx, tag) -> tuple:
        """Build a segmentor with one BNHead per lr and train it on the training images ``idx``."""
        from heads.segmentation import train_heads
        from suites.segmentation.protocol import build_segmentor
        o = self.options
        gen = seed_everything(ctx.seed)
        enc = ctx.encoder.to(ctx.device).eval()
        model = build_segmentor(enc, geo, train.num_classes, len(lrs), ctx.precision, seed=ctx.seed).to(ctx.device)
        dh = model.decode_head
        t0 = time.perf_counter()
        if ctx.mode == "fast":
            batches, n_items, extra = self._fast_batches(ctx, model, geo, train, idx, gen)
        else:
            batches, n_items, extra = self._exact_batches(ctx, model, geo, train, idx, gen)
        curve = None
        if o.curve_every and curve_idx and ctx.mode == "fast":
            curve = self._window_curve(ctx, model, geo, train, curve_idx, lrs, tag,
                                       report=tag == ctx.heads[0])
        prep_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        points: list[tuple[int, float]] = []

        def on_step(step, losses):
            if step % max(1, o.log_every) == 0 or step == o.iters - 1:
                ctx.log_curve({f"{tag}.train_loss": float(np.mean(losses))}, step)
            if curve is not None and ((step + 1) % o.curve_every == 0 or step == o.iters - 1):
                points.append((step + 1, curve(step + 1)))

        last = train_heads(dh.heads, batches, dh.loss_single, lrs, o.iters, weight_decay=o.weight_decay,
                           betas=tuple(o.betas), warmup_iters=o.warmup_iters, warmup_ratio=o.warmup_ratio,
                           power=o.poly_power, min_lr=o.min_lr, on_step=on_step)
        info = {"train_items": n_items, "train_images": len(idx), "prepare_seconds": round(prep_s, 2),
                "train_seconds": round(time.perf_counter() - t1, 2), "final_train_loss": last, **extra}
        if points:
            info["curve_holdout_mIoU"] = points
        return model, info

    def _window_features(self, ctx, geo, split, idx):
        """Cached encoder features + labels of the slide windows of images ``idx`` (fast mode)."""
        from suites.segmentation.windows import WindowSet, labels_key
        enc = ctx.encoder
        ws = WindowSet(split, idx, geo, enc.info)
        feats = ctx.features(ws, self._cached_layers(ctx, geo), kinds=("patches",), desc="train windows")
        labels = ws.labels(ctx.cache.root, labels_key(feats.key, ws))
        blocks = sorted(set(enc.resolve_layers(geo.layers)))
        arrays = [_Rows(feats[f"patches.{b}"]) for b in blocks]
        return ws, feats, arrays, _Rows(labels)

    def _cached_layers(self, ctx, geo) -> list[int]:
        """Blocks to cache: those of every head of the run whose windows are ``geo``'s, so that linear and
        +ms heads on the same windows share one entry (one encoder pass per window)."""
        enc = ctx.encoder
        blocks = set(enc.resolve_layers(geo.layers))
        for head in ctx.heads:
            other = self.geometry(head, enc)
            if other.transform_id() == geo.transform_id():
                blocks |= set(enc.resolve_layers(other.layers))
        return sorted(blocks)

    def _fast_batches(self, ctx, model, geo, train, fit_idx, gen):
        from heads.segmentation import patch_centre_labels
        ws, feats, arrays, labels = self._window_features(ctx, geo, train, fit_idx)
        if self.options.loss_resolution == "patch":   # sampled once: [N, h, w] instead of [N, crop, crop]
            labels = _Rows(patch_centre_labels(labels[torch.arange(len(ws))], ctx.encoder.info.patch_size).numpy())
        n = len(ws)
        bs = min(self.options.batch_size, n)
        dh, dev = model.decode_head, ctx.device

        def batches() -> Iterator:
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n - bs + 1, bs):
                idx = perm[s:s + bs].sort().values
                maps = [a[idx].to(dev).float().permute(0, 3, 1, 2) for a in arrays]
                yield dh.features(maps), labels[idx].to(dev).long()

        return batches, n, {"windows": n, "features_cache": feats.key, "features_computed": feats.computed}

    def _window_curve(self, ctx, model, geo, split, idx, lrs, tag, report):
        """A cheap held-out learning curve: mIoU of each head on the cached windows of the held-out images
        (logits upsampled to the window, ignore pixels left out), at the training resolution."""
        ws, _, arrays, labels = self._window_features(ctx, geo, split, idx)
        dh, dev, c = model.decode_head, ctx.device, model.decode_head.num_classes

        @torch.no_grad()
        def measure(step: int) -> float:
            was_training = dh.heads.training
            dh.heads.eval()
            inter = torch.zeros(len(lrs), c, dtype=torch.float64)
            union = torch.zeros(len(lrs), c, dtype=torch.float64)
            for s in range(0, len(ws), 32):
                rows = torch.arange(s, min(s + 32, len(ws)))
                xhat = dh.heads.normalize(dh.features([a[rows].to(dev).float().permute(0, 3, 1, 2)
                                                      for a in arrays]))
                lab = labels[rows].long()
                keep = lab != dh.ignore_index
                for k in range(len(lrs)):
                    logits = F.interpolate(dh.heads.project(xhat, k), size=lab.shape[-2:], mode="bilinear",
                                           align_corners=dh.align_corners)
                    p, t = logits.argmax(1).cpu()[keep], lab[keep]
                    hit = torch.bincount(t[p == t], minlength=c)[:c].double()
                    inter[k] += hit
                    union[k] += (torch.bincount(p, minlength=c)[:c] + torch.bincount(t, minlength=c)[:c]).double() - hit
            dh.heads.train(was_training)
            present = union > 0
            miou = [float((inter[k][present[k]] / union[k][present[k]]).mean() * 100) for k in range(len(lrs))]
            values = {f"{tag}.curve.holdout_mIoU": max(miou)}
            if len(lrs) > 1:
                values.update({f"{tag}.lr{lr:g}.curve.holdout_mIoU": v for lr, v in zip(lrs, miou)})
            ctx.log_curve(values, step)
            if report:
                ctx.report_intermediate(max(miou), step)
            return max(miou)

        return measure

    def _exact_batches(self, ctx, model, geo, train, fit_idx, gen):
        from heads.segmentation import patch_centre_labels
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

        patch = ctx.encoder.info.patch_size if o.loss_resolution == "patch" else 0

        def batches() -> Iterator:
            for data in loader:
                data = model.data_preprocessor(data, training=True)
                labels = dh.stack_labels(data["data_samples"])
                yield (dh.features(model.backbone(data["inputs"])),
                       patch_centre_labels(labels, patch) if patch else labels)

        return batches, len(ds), {"images": len(ds)}


class _Rows:
    """Row access to a cached [N, ...] array as torch tensors: held in memory (its file size) when small,
    read from the memmap per batch otherwise (paper-scale caches are tens of GB)."""

    IN_MEMORY_BYTES = 2 << 30

    def __init__(self, array):
        self.shape = array.shape
        self.array = torch.from_numpy(np.array(array)) if array.nbytes <= self.IN_MEMORY_BYTES else array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if isinstance(self.array, torch.Tensor):
            return self.array[idx]
        return torch.from_numpy(np.asarray(self.array[idx.numpy()]))


def seg_samples(res: dict) -> dict[str, PerSample]:
    """Per-image statistics of one scored head (or the floor): mIoU from per-class intersections and unions
    (reduce 'miou': classes with no union over the resampled images are left out, as mmseg's nanmean over
    classes present in label or prediction), aAcc = correct / labelled pixels (reduce 'ratio'), mAcc from
    per-class correct and labelled pixels (reduce 'miou' over classes present in the labels)."""
    inter, union, label = res["per_image"]
    c = inter.shape[1]
    ids = res["ids"]
    return {
        "mIoU": PerSample(ids, np.hstack([inter, union]), "miou", 100.0,
                          tuple(f"inter.{i}" for i in range(c)) + tuple(f"union.{i}" for i in range(c))),
        "aAcc": PerSample(ids, np.stack([inter.sum(1), label.sum(1)], 1), "ratio", 100.0, ("correct", "labelled")),
        "mAcc": PerSample(ids, np.hstack([inter, label]), "miou", 100.0,
                          tuple(f"correct.{i}" for i in range(c)) + tuple(f"labelled.{i}" for i in range(c))),
    }


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
        name="seg.ade20k", version="2", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
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
        name="seg.voc", version="2", task="segmentation", heads=("linear", "ms"), default_head="linear,ms",
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
