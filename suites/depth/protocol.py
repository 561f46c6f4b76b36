"""The depth protocol's building blocks: data at the encoder's input size, exact-mode augmentation, blocks
each head reads, the held-out split, the heads and loss, training batches, cached features, scoring with
the metric code and per-image records. A mixin of the suites (``suite.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.device import autocast
from harness.samples import PerSample
from harness.suite import RunContext
from heads.depth import DepthInput, DepthLoss, LinearDepthGrid
from heads.dpt import DPTDepthHead, dpt_blocks
from suites.depth.datasets import NYU_REF_HW, DepthSplit, NYUDepth, round_to_multiple
from suites.depth.metrics import METRICS, DepthMetric
from suites.images import DataError

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


class RandomCropFlip:
    """Exact-mode augmentation on native-resolution tensors (picklable for data-loader workers)."""

    def __init__(self, crop_hw: tuple[int, int], flip: bool, pre_crop=None):
        self.crop_hw = crop_hw
        self.flip = flip
        self.pre_crop = pre_crop      # callable hw -> (top, left, h, w) applied first (NYU white border)

    def __call__(self, x: torch.Tensor, d: torch.Tensor):
        if self.pre_crop is not None:
            t, l, h, w = self.pre_crop(tuple(x.shape[-2:]))
            x, d = x[..., t:t + h, l:l + w], d[..., t:t + h, l:l + w]
        H, W = x.shape[-2:]
        ch, cw = min(self.crop_hw[0], H), min(self.crop_hw[1], W)
        t = int(torch.randint(0, H - ch + 1, (1,)))
        l = int(torch.randint(0, W - cw + 1, (1,)))
        x, d = x[..., t:t + ch, l:l + cw], d[..., t:t + ch, l:l + cw]
        if self.flip and bool(torch.rand(()) < 0.5):
            x, d = x.flip(-1), d.flip(-1)
        return x, d


@dataclass
class _Data:
    train: DepthSplit          # eval transform (features for fit and holdout)
    test: DepthSplit
    raw_train: DepthSplit      # without transform (for exact-mode augmentation)
    input_hw: tuple[int, int]
    native_hw: tuple[int, int]



class _Targets:
    """Training targets at the encoder input size: read once into memory when they fit
    (``max_bytes``), else read from disk per batch."""

    def __init__(self, ds: DepthSplit, indices: np.ndarray, max_bytes: int = 1 << 30):
        self.ds = ds
        h, w = ds.input_hw
        self.mem: dict[int, torch.Tensor] | None = None
        if len(indices) * h * w * 4 <= max_bytes:
            self.mem = {int(i): self._read(int(i)) for i in indices}

    def _read(self, i: int) -> torch.Tensor:
        import torch.nn.functional as F
        gt = torch.from_numpy(self.ds.gt(i))
        return F.interpolate(gt[None, None], size=self.ds.input_hw, mode="nearest")[0, 0]

    def get(self, sel: np.ndarray) -> torch.Tensor:
        return torch.stack([self.mem[int(i)] if self.mem is not None else self._read(int(i)) for i in sel])



class DepthProtocol:
    ref_hw: ClassVar[tuple[int, int]] = NYU_REF_HW    # frame size train_crop is given at

    # -- datasets -------------------------------------------------------------------------------
    def _split(self, data: Path, split: str) -> DepthSplit:
        raise NotImplementedError

    def dataset_fingerprint(self, data: Path) -> str:
        return f"{self._split(data, 'train').fingerprint()}-{self._split(data, 'test').fingerprint()}"

    def _data(self, data: Path, info) -> _Data:
        train, test = self._split(data, "train"), self._split(data, "test")
        native = train.native_hw(0)
        s = self.options.short_side / min(native) if self.options.short_side else 1.0
        p = info.patch_size
        input_hw = (round_to_multiple(native[0] * s, p), round_to_multiple(native[1] * s, p))
        mk = lambda ds: ds.with_input(input_hw, info.mean, info.std, info.interpolation)  # noqa: E731
        return _Data(mk(train), mk(test), train, input_hw, native)

    def _exact_train(self, d: _Data, info) -> DepthSplit:
        o = self.options
        H, W = d.native_hw
        ch = min(H, int(round(o.train_crop[0] * H / self.ref_hw[0])))
        cw = min(W, int(round(o.train_crop[1] * W / self.ref_hw[1])))
        pre = d.raw_train.train_crop_box if isinstance(d.raw_train, NYUDepth) else None
        if pre is not None:
            _, _, ph, pw = pre((H, W))
            ch, cw = min(ch, ph), min(cw, pw)
        sy, sx = d.input_hw[0] / H, d.input_hw[1] / W
        p = info.patch_size
        crop_in = (round_to_multiple(ch * sy, p), round_to_multiple(cw * sx, p))
        aug = RandomCropFlip((ch, cw), o.flip, pre)
        return d.raw_train.with_input(crop_in, info.mean, info.std, info.interpolation, augment=aug,
                                      augment_id=f"crop{ch}x{cw}-flip{int(o.flip)}")

    def _linear_blocks(self, encoder) -> list[int]:
        """Blocks the linear heads read; a head with ``n`` layers reads the last ``n`` of them.
        ``linear_layers=spaced`` (DINOv2 linear depther): the 4 blocks of the per-depth table (ViT-S/B
        2,5,8,11; ViT-L 4,11,17,23; ViT-g 9,19,29,39), so "1 layer" = the last block and "4 layers" = the
        table; ``last``: the last ``max(n_last_layers)`` blocks."""
        n = max(self.options.n_last_layers)
        L = encoder.info.num_layers
        if n > L:
            raise DataError(f"protocol.n_last_layers asks for the last {n} blocks but encoder "
                            f"'{encoder.info.spec}' has only {L}")
        if self.options.linear_layers == "last":
            return list(range(L - n, L))
        if n == 4:
            return dpt_blocks(L)
        return sorted({max(0, round((i + 1) * L / n) - 1) for i in range(n)})

    def _dpt_blocks(self, encoder) -> list[int]:
        L = encoder.info.num_layers
        if self.options.dpt_layers is not None:
            try:
                blocks = sorted(encoder.resolve_layers(self.options.dpt_layers))
            except ValueError as e:
                raise DataError(f"protocol.dpt_layers={list(self.options.dpt_layers)}: {e}") from None
            if len(set(blocks)) != 4:
                raise DataError(f"protocol.dpt_layers={list(self.options.dpt_layers)} must name 4 different blocks")
            return blocks
        if L < 4:
            raise DataError(f"the DPT head reads 4 blocks but encoder '{encoder.info.spec}' has only {L}")
        return dpt_blocks(L)

    def _holdout(self, ds: DepthSplit, usable: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Hold out whole folders (NYU scenes, KITTI drives) when there are several, else random images."""
        g = np.random.default_rng(seed)
        idx = np.flatnonzero(usable)
        if len(idx) < 2:
            raise DataError(f"'{ds.listing}' has {len(idx)} training frame(s) with ground truth; need >= 2 "
                            "(one to fit, one to select on)")
        groups: dict[str, list[int]] = {}
        for i in idx:
            groups.setdefault(str(Path(ds.samples[i].image).parent), []).append(int(i))
        want = max(1, int(round(len(idx) * self.options.holdout_fraction)))
        hold: list[int] = []
        if len(groups) >= 3:
            for key in g.permutation(sorted(groups)):
                if len(hold) >= want:
                    break
                if len(hold) + len(groups[key]) <= max(want, len(idx) // 2):
                    hold += groups[key]
        if not hold or len(hold) >= len(idx):
            hold = list(g.permutation(idx)[:min(want, len(idx) - 1)])
        hold_arr = np.array(sorted(hold), dtype=np.int64)
        fit_arr = np.setdiff1d(idx, hold_arr)
        return fit_arr, hold_arr

    # -- building blocks ------------------------------------------------------------------------
    def _grid(self, dim: int, generator=None) -> LinearDepthGrid:
        o = self.options
        inputs = [DepthInput(n, c) for n in o.n_last_layers for c in o.cls_concat]
        return LinearDepthGrid(inputs, o.lrs, dim, o.min_depth, o.max_depth, o.n_bins, o.bins, o.norm, o.upsample,
                               generator=generator)

    def _dpt(self, dim: int) -> DPTDepthHead:
        o = self.options
        return DPTDepthHead(dim, o.min_depth, o.dpt_channels, o.dpt_post_process, readout="project")

    def _loss(self) -> DepthLoss:
        return DepthLoss(self.options.sig_warm_iter, self.options.grad_loss_weight)

    def _train_valid(self, depth: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
        o = self.options
        v = (depth > o.min_depth) & (depth < o.max_depth)
        return v if region is None else v & region

    def _batches(self, ctx: RunContext, d: _Data, feats, fit: np.ndarray, blocks: list[int], gen: torch.Generator):
        """Endless iterator of (patches {b: [B,h,w,D]}, cls {b: [B,D]}, target [B,H,W], valid [B,H,W])."""
        o = self.options
        bs = min(o.batch_size, len(fit))
        if ctx.mode == "fast":
            targets = _Targets(d.train, fit)
            region = torch.from_numpy(d.train.train_mask(d.input_hw))
            while True:
                perm = fit[torch.randperm(len(fit), generator=gen).numpy()]
                for s in range(0, len(perm) - bs + 1, bs):
                    sel = np.sort(perm[s:s + bs])
                    pat = {b: torch.from_numpy(np.asarray(feats[f"patches.{b}"][sel], dtype=np.float32)) for b in blocks}
                    cl = {b: torch.from_numpy(np.asarray(feats[f"cls.{b}"][sel], dtype=np.float32)) for b in blocks}
                    t = targets.get(sel)
                    yield pat, cl, t, self._train_valid(t, region)
        else:
            aug = self._exact_train(d, ctx.encoder.info)
            subset = torch.utils.data.Subset(aug, fit.tolist())
            enc = ctx.encoder
            while True:
                loader = torch.utils.data.DataLoader(subset, batch_size=bs, shuffle=True, drop_last=True,
                                                     generator=gen, num_workers=ctx.num_workers)
                for images, depth in loader:
                    with torch.no_grad(), autocast(ctx.device, ctx.precision):
                        out = enc(images.to(ctx.device), layers=blocks, norm=False)
                    pat = {b: out.layers[b].patches.float() for b in blocks}
                    cl = {b: out.layers[b].cls.float() for b in blocks}
                    t = depth[:, 0].to(ctx.device)
                    yield pat, cl, t, self._train_valid(t, None)

    def _features(self, ctx: RunContext, ds: DepthSplit, blocks: list[int], desc: str):
        """Features of every block any head of this run reads, so ``linear,dpt`` costs one encoder pass
        per image (the second head finds the same cache entry). Un-normed (``norm=False``), as DINOv2's
        depthers read ``get_intermediate_layers(..., norm=False)`` for both heads."""
        wanted = set(blocks)
        if "linear" in ctx.heads:
            wanted |= set(self._linear_blocks(ctx.encoder))
        if "dpt" in ctx.heads:
            wanted |= set(self._dpt_blocks(ctx.encoder))
        return ctx.features(ds.images_only(), sorted(wanted), ("patches", "cls"), desc=desc, norm=False)

    def _evaluate(self, predict, ds: DepthSplit, indices: np.ndarray, batch: int) -> DepthMetric:
        """``predict(sorted indices) -> [K, B, h, w]``; ground truth read at native size from ``ds``."""
        metric = DepthMetric(self.options.min_depth, self.options.max_depth)
        metric.order = []       # dataset indices in the order they were processed (per-sample ids)
        for s in range(0, len(indices), batch):
            sel = np.sort(indices[s:s + batch])
            metric.order.extend(int(i) for i in sel)
            with torch.no_grad():
                pred = predict(sel).float().cpu()
            for j, i in enumerate(sel):
                gt = torch.from_numpy(ds.gt(int(i)))
                mask = torch.from_numpy(ds.eval_mask(int(i), tuple(gt.shape)))
                metric.process(pred[:, j], gt, mask)
        return metric

    def _val_every(self, total: int) -> int:
        """Steps between validation points of the learning curve (``curve_points`` along training)."""
        n = self.options.curve_points
        return max(1, total // n) if n else 0

    @staticmethod
    def _per_sample(ds: DepthSplit, metric: DepthMetric, row: int, prefix: str) -> dict[str, PerSample]:
        """Per-image values of head ``row`` as ``<prefix>.<metric>`` records; ids = the image's path as the
        list file gives it. Images without a valid pixel are left out, as ``compute`` leaves them out of the
        mean (the set depends on the ground truth only, so it is the same for every encoder and floor)."""
        per = metric.per_image()
        npx = np.concatenate(metric._n_pixels) if metric._n_pixels else np.zeros(0)
        ok = npx > 0
        ids = [ds.samples[i].image for i, keep in zip(metric.order, ok) if keep]
        out = {}
        for m in METRICS:
            v = np.asarray(per[m]).reshape(-1, len(ok))[row][ok]
            out[f"{prefix}.{m}"] = PerSample(ids, v, reduce="mean", columns=(m,),
                                             meta={"split": ds.split, "list": ds.listing.name})
        return out
    def _progress(self, ctx, total, desc):
        if tqdm is None:
            return None
        return tqdm(total=total, desc=desc, disable=not ctx.progress, leave=False)

