"""Training of the segmentation heads: one BNHead per lr on cached slide windows (fast) or on mmseg's
augmentation pipeline (exact), trained by ``heads/grid.py``'s loop; the held-out learning curve. A mixin
of the suites (``suite.py``)."""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.device import seed_everything


class SegTraining:
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
