"""Monocular depth on NYUd v2 and KITTI (paper Table 1): linear head grid and DPT head on frozen features.

Protocol (paper App. A.3 = DINOv2's linear protocol; heads and losses from DINOv2 / DINOv3 depth):

- **linear** (default head): one pass trains a grid of DINOv2 linear depth heads at once on shared
  features: learning rates ``lrs`` (1e-4 .. 1e-1) x ``n_last_layers`` {1, 4} x CLS token concatenated to
  every patch token or not. "4 layers" = DINOv2's evenly spaced blocks (ViT-S/B 2,5,8,11; ViT-L 4,11,17,23;
  ViT-g 9,19,29,39), "1 layer" = the last block (``linear_layers=last``: the last n blocks instead). 256 bins
  in [min_depth, max_depth], "linear" normalisation, x4 upsampling (``heads/depth.py``). SGD momentum 0.9,
  no weight decay, cosine decay over ``iterations`` (paper 12,500), lr not scaled by batch size. Loss =
  SigLoss (variance term after ``sig_warm_iter`` = 100 steps) + ``grad_loss_weight`` x multi-scale
  log-gradient loss (KITTI 0.5, as DINOv2). The head is selected on a validation part held out of **train**
  (``holdout_fraction``, whole scene folders when the list has several), by rmse; test numbers are
  reported for the selected head (and per head).
- **dpt**: one DPT head per run (the 4 blocks of the same per-depth table, readout "project", post-process
  channels [D/8, D/4, D/2, D], ``dpt_channels`` = 256 in the paper), AdamW (betas 0.9/0.99, wd 1e-4, clip
  35) with a one-cycle schedule over its own ``dpt_iterations`` (38,400) with ``dpt_warmup`` (12,800)
  warm-up steps (DINOv3 NYU). Its learning rate ``dpt_lr`` is the Optuna search space; the sweep objective
  should be ``val.rmse`` (held-out train), never the test ``rmse``.
- Both heads read the blocks **un-normed** (``norm=False``), as DINOv2's depthers
  (``get_intermediate_layers(..., norm=False)``).
- Reference rows (encoder-independent, same test split and metric code): ``floor.*`` = the training mean
  depth everywhere, ``floor_map.*`` = the per-pixel training mean depth map. Every reported metric of the
  selected heads and floors has per-image records (``per_sample``, ids = the image path of the list file).

Modes:

- ``fast``: the encoder runs once per image (feature cache, kinds ``patches`` and ``cls``). Every split
  uses the eval transform: the frame (KITTI: KB crop) resized so its short side is ``short_side`` (None =
  native) and each side is the nearest multiple of the patch size. Training targets are the ground truth
  resized nearest-neighbour to that size; on NYU the pixels outside the white-border crop (43, 45, 608, 472)
  are left out of the loss.
- ``exact``: augmentation on the fly with an encoder forward per batch, as DINOv2/DINOv3 depth training:
  NYU white-border crop, then a random ``train_crop`` (416 x 544 at 480 x 640, scaled to the frame) and a
  random horizontal flip (p = 0.5); KITTI random 352 x 704 crop of the KB-cropped frame + flip. The crop is
  resized by the same factor as the eval frames (a multiple of the patch size). The paper writes
  "random-resized-crop", which rescales the image and so changes apparent metric depth; we follow the
  depth references (random crop + flip) and leave out their rotation (2.5 deg) and colour jitter.
  Validation and test features come from the cache in both modes (no test-time augmentation).

Evaluation (``metrics.py``): predictions resized bilinearly to the native ground truth, clamped to
[min_depth, max_depth]; valid = crop (NYU Eigen, KITTI Garg) & min < gt < max; per-image means.
KITTI frames whose depth path is ``None`` have no ground truth: left out of training and evaluation and
counted (``test.n_no_gt``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from harness.config import ConfigError, check_range, field
from harness.device import autocast, seed_everything
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.depth import CPU_LRS, DEPTH_LRS, DepthInput, DepthLoss, LinearDepthGrid, resize_to, train_depth_grid
from heads.dpt import DPTDepthHead, dpt_blocks
from suites.depth.datasets import (KB_HW, NYU_REF_HW, DepthSplit, KittiDepth, NYUDepth, round_to_multiple)
from suites.depth.metrics import METRICS, DepthMetric
from suites.images import DataError

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


def _check_common(o) -> None:
    """Ranges come from the fields (``field(min=, max=)``, checked here too for direct construction);
    only the rules that tie fields together are written out."""
    import dataclasses
    for f in dataclasses.fields(o):
        check_range(getattr(o, f.name), f.metadata, f"protocol.{f.name}")

    def bad(name, why):
        raise ConfigError(f"protocol.{name}={getattr(o, name)!r}: {why}")
    if not o.min_depth < o.max_depth:
        bad("min_depth", f"need min_depth < max_depth (= {o.max_depth})")
    if o.dpt_post_process is not None and len(o.dpt_post_process) != 4:
        bad("dpt_post_process", "must have 4 channel counts (or none = [D/8, D/4, D/2, D])")
    if o.dpt_layers is not None and len(o.dpt_layers) != 4:
        bad("dpt_layers", "the DPT head reads exactly 4 blocks")
    if o.dpt_warmup >= o.dpt_iterations:
        bad("dpt_warmup", f"must be < dpt_iterations (= {o.dpt_iterations})")


@dataclass(frozen=True)
class NYUdOptions:
    iterations: int = field(12500, min=1, help="iterations of the linear grid (paper: 12,500)")
    batch_size: int = field(16, min=1, help="training batch size (DINOv2 depth: 2 per GPU x 8 GPUs = 16)")
    lrs: tuple[float, ...] = field(DEPTH_LRS, min=0, min_open=True, nonempty=True,
                                   help="linear-head learning-rate grid, one head each (paper: 1e-4..1e-1)")
    n_last_layers: tuple[int, ...] = field((1, 4), min=1, nonempty=True,
                                           help="linear heads read the patch tokens of n blocks: the last n of "
                                                "those `linear_layers` picks")
    linear_layers: Literal["spaced", "last"] = field("spaced", help="blocks of the n-layer linear heads: spaced = "
                                                     "DINOv2's evenly spaced table (n=4: ViT-S/B 2,5,8,11, ViT-L "
                                                     "4,11,17,23, ViT-g 9,19,29,39), last = the last n blocks")
    cls_concat: tuple[bool, ...] = field((False, True), nonempty=True,
                                         help="CLS token concatenated to every patch token")
    n_bins: int = field(256, min=2, help="depth bins of the linear head")
    bins: Literal["uniform", "log"] = field("uniform", help="bin placement: uniform (DINOv2 UD) or log "
                                                            "(exp(linspace(ln min, ln max)), fixed SID)")
    norm: Literal["linear", "softmax", "sigmoid"] = field("linear", help="bin-probability normalisation")
    upsample: int = field(4, min=1, help="bilinear upsampling of the linear head's logits")
    min_depth: float = field(1e-3, min=0, min_open=True,
                             help="depth range (m): bins, clamping and the evaluation range")
    max_depth: float = field(10.0, min=0, min_open=True, help="NYU 10 m")
    sig_warm_iter: int = field(100, min=0, help="SigLoss warm-up: the variance term starts after this many steps")
    grad_loss_weight: float = field(0.0, min=0, help="weight of the multi-scale log-gradient loss (NYU 0)")
    holdout_fraction: float = field(0.1, min=0, max=1, min_open=True, max_open=True,
                                    help="part of train held out to select the head (never test)")
    short_side: int | None = field(None, min=8, help="resize the frame's short side to this before the encoder "
                                             "(then each side to a patch multiple); None = native size (paper)")
    train_crop: tuple[int, int] = field((416, 544), min=1, help="exact mode random crop (H, W) at 480x640, scaled")
    flip: bool = field(True, help="exact mode: random horizontal flip")
    eval_batch_size: int = field(8, min=1, hash=False, help="images per evaluation batch (memory only)")
    head_chunk: int = field(1, min=1, hash=False, help="linear heads per forward/backward (speed/memory only; 1 is "
                                                "fastest on CPU, larger may be faster on GPU)")
    dpt_lr: float = field(3e-4, min=0, min_open=True, help="DPT head AdamW learning rate (the Optuna search space)")
    dpt_iterations: int = field(38400, min=2, help="DPT head iterations (DINOv3 NYU: 38,400)")
    dpt_warmup: int = field(12800, min=1, help="DPT one-cycle warm-up iterations (DINOv3 NYU: 12,800)")
    dpt_weight_decay: float = field(1e-4, min=0, help="DPT head AdamW weight decay (DINOv3 NYU)")
    dpt_grad_clip: float = field(35.0, min=0, help="DPT gradient-norm clip")
    dpt_channels: int = field(256, min=1, help="DPT fusion channels (paper/DINOv2: 256)")
    dpt_post_process: tuple[int, ...] | None = field(None, min=1,
                                                     help="DPT reassemble channels; None = [D/8,D/4,D/2,D]")
    dpt_layers: tuple[int, ...] | None = field(None, help="4 block indices for DPT; None = evenly spaced")
    curve_points: int = field(0, min=0, hash=False, help="validation rmse (held-out train) this many times during "
                                                  "training, logged as a learning curve (0 = only at the end)")
    floor_frames: int = field(2000, min=1, help="training frames (evenly spaced) read for the floor rows' mean depth "
                                         "and mean map")

    def __post_init__(self):
        _check_common(self)


@dataclass(frozen=True)
class KittiOptions(NYUdOptions):
    max_depth: float = field(80.0, min=0, min_open=True, help="KITTI 80 m cap")
    grad_loss_weight: float = field(0.5, min=0, help="weight of the multi-scale log-gradient loss (DINOv2 KITTI 0.5)")
    train_crop: tuple[int, int] = field((352, 704), min=1, help="exact mode random crop (H, W) of the 352x1216 KB "
                                                         "crop, scaled")
    kb_crop: bool = field(True, help="KB crop (352x1216 bottom-centred) of every frame")
    rgb_dir: str = field("", help="folder (relative to the data root) the rgb paths are relative to")
    depth_dir: str = field("", help="folder (relative to the data root) the depth paths are relative to")


def _spec(name: str, title: str) -> SuiteSpec:
    ms = [MetricSpec("rmse", "min", f"{title} test RMSE (m) of the selected head"),
          MetricSpec("abs_rel", "min", "mean |gt-pred|/gt"), MetricSpec("sq_rel", "min", "mean (gt-pred)^2/gt"),
          MetricSpec("rmse_log", "min", "RMSE of ln depth"), MetricSpec("log10", "min", "mean |log10 gt - log10 pred|"),
          MetricSpec("silog", "min", "100 sqrt(mean g^2 - mean(g)^2)"), MetricSpec("mae", "min", "mean |gt-pred| (m)"),
          MetricSpec("delta1", "max", "fraction max(gt/pred, pred/gt) < 1.25"),
          MetricSpec("delta2", "max", "... < 1.25^2"), MetricSpec("delta3", "max", "... < 1.25^3"),
          MetricSpec("val.rmse", "min", "RMSE on the part of train held out for selection (Optuna objective)")]
    return SuiteSpec(name=name, version="2", task="depth", heads=("linear", "dpt"), metrics=tuple(ms),
                     primary="rmse", validation="val.rmse", default_head="linear,dpt", paper_table="Table 1",
                     description=f"{title}: DINOv2 linear depth grid (lr x layers {{1,4}} x CLS concat) selected on "
                                 "held-out train, or a DPT head; per-image metrics on the test split.")


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


class _DepthSuite(Suite):
    Options: ClassVar[type] = NYUdOptions
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

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"dpt_lr": ("float", 1e-5, 1e-3, True)}

    @classmethod
    def demo_protocol(cls, preset: str) -> dict[str, Any]:
        """CPU sizes (the Options defaults are the paper's protocol: 12,500 iterations at native size).

        ``default``: the linear head's cost per step is its 1x1 conv over the 4-block input plus the
        x4-upsampled 256-bin map, per head and image, so the demo buys iterations with fewer heads:
        4 layers without CLS (the strongest input of DINOv2's grid) x 2 lrs, batch 4, 300 steps (sized
        from the ``lin.val_rmse_best`` curve, see README), SigLoss warm-up 10 steps (the reference's
        100 of 12,500 would spend a third of a 300-step demo fitting only the global scale). The DPT
        head costs ~8x a linear step even at 32 channels and needs thousands of AdamW steps: the
        default demo runs the linear head only (``demo_heads``); its DPT sizes are for
        ``--head dpt`` runs at demo scale."""
        if preset == "tiny":
            return {"iterations": 40, "batch_size": 4, "lrs": list(CPU_LRS), "short_side": 96, "dpt_channels": 32,
                    "sig_warm_iter": 10, "dpt_iterations": 40, "dpt_warmup": 13}
        return {"iterations": 300, "batch_size": 4, "lrs": [1e-2, 1e-1], "n_last_layers": [4], "cls_concat": [False],
                "short_side": 120, "sig_warm_iter": 10, "curve_points": 6,
                "dpt_channels": 32, "dpt_iterations": 100, "dpt_warmup": 33}

    @classmethod
    def demo_heads(cls, preset: str) -> str:
        """Heads the demo should run: both on ``tiny`` (the tests), linear only on ``default`` (a converged
        DPT head does not fit the CPU budget; see ``demo_protocol``)."""
        return "linear,dpt" if preset == "tiny" else "linear"

    # -- validate -------------------------------------------------------------------------------
    def validate(self, ctx: RunContext) -> dict:
        enc = ctx.encoder
        d = self._data(ctx.data, enc.info)
        o = self.options
        report: dict[str, Any] = {"train_frames": len(d.train), "test_frames": len(d.test),
                                  "test_without_gt": int((~d.test.has_gt).sum()), "input_hw": list(d.input_hw),
                                  "native_hw": list(d.native_hw)}
        x, depth = d.train[0]
        report["gt_valid_pixels"] = int((depth > 0).sum())
        if "linear" in ctx.heads:
            blocks = self._linear_blocks(enc)
            out = enc(x[None].to(ctx.device), layers=blocks, norm=False)
            grid = self._grid(enc.info.embed_dim).to(ctx.device)
            pat = {b: out.layers[b].patches.float() for b in blocks}
            cl = {b: out.layers[b].cls.float() for b in blocks}
            pred = grid(pat, cl, blocks, chunk=o.head_chunk)
            report["linear"] = {"heads": grid.n_heads, "blocks": blocks, "prediction_hw": list(pred.shape[-2:])}
        if "dpt" in ctx.heads:
            blocks = self._dpt_blocks(enc)
            out = enc(x[None].to(ctx.device), layers=blocks, norm=False)
            head = self._dpt(enc.info.embed_dim).to(ctx.device)
            pred = head([out.layers[b].patches.float() for b in blocks], [out.layers[b].cls.float() for b in blocks])
            report["dpt"] = {"blocks": blocks, "prediction_hw": list(pred.shape[-2:]),
                             "params": sum(p.numel() for p in head.parameters())}
        return report

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

    # -- run ------------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> SuiteResult:
        o = self.options
        gen = seed_everything(ctx.seed)
        enc = ctx.encoder
        d = self._data(ctx.data, enc.info)
        train_ok = d.train.has_gt
        test_idx = np.flatnonzero(d.test.has_gt)
        if len(test_idx) == 0:
            raise DataError(f"'{d.test.listing}' lists no frame with ground truth")
        fit, hold = self._holdout(d.train, train_ok, ctx.seed)
        metrics: dict[str, float] = {"test.n_images": float(len(test_idx)),
                                     "test.n_no_gt": float(len(d.test) - len(test_idx))}
        selection: dict[str, Any] = {}
        details: dict[str, Any] = {"n_train": len(d.train), "n_fit": len(fit), "n_holdout": len(hold),
                                   "n_train_no_gt": int((~train_ok).sum()), "n_test": len(d.test),
                                   "n_test_evaluated": len(test_idx), "n_test_no_gt": len(d.test) - len(test_idx),
                                   "input_hw": list(d.input_hw), "native_hw": list(d.native_hw),
                                   "mode": ctx.mode, "metric_convention": "per-image mean",
                                   "train_list": str(d.train.listing), "test_list": str(d.test.listing)}
        if details["n_test_no_gt"]:
            print(f"[{self.spec.name}] {details['n_test_no_gt']} test frame(s) have no ground truth (depth path "
                  f"'None') and are left out of the evaluation", file=sys.stderr)
        per_sample: dict[str, PerSample] = {}
        self._floors(d, train_ok, test_idx, metrics, per_sample, details)
        order = [h for h in ctx.heads if h in ("linear", "dpt")]
        results: dict[str, dict[str, float]] = {}
        if "linear" in order:
            results["linear"] = self._run_linear(ctx, d, fit, hold, test_idx, gen, metrics, selection, details,
                                                 per_sample)
        if "dpt" in order:
            results["dpt"] = self._run_dpt(ctx, d, fit, hold, test_idx, gen, metrics, selection, details,
                                           per_sample)
        first = results[order[0]]
        prefix = "lin" if order[0] == "linear" else "dpt"
        for m in METRICS:
            metrics[m] = first[m]
            per_sample[m] = per_sample[f"{prefix}.{m}"]
        metrics["val.rmse"] = first["val.rmse"]
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)

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

    def _floors(self, d: _Data, train_ok: np.ndarray, test_idx: np.ndarray, metrics, per_sample, details) -> None:
        """Encoder-independent reference rows, scored on the test split with the same metric code:
        ``floor.*`` = the mean training depth everywhere (over the valid pixels of the training frames),
        ``floor_map.*`` = the per-pixel mean training depth map (pixels never valid in train take the
        global mean), resized bilinearly to each test frame as any prediction is. At most ``floor_frames``
        evenly spaced training frames are read."""
        o = self.options
        idx = np.flatnonzero(train_ok)
        if len(idx) > o.floor_frames:
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, o.floor_frames).round().astype(np.int64))]
        ref = d.native_hw
        total, count = 0.0, 0
        msum = np.zeros(ref, dtype=np.float64)
        mcnt = np.zeros(ref, dtype=np.float64)
        for i in idx:
            gt = d.train.gt(int(i))
            valid = (gt > o.min_depth) & (gt < o.max_depth) & d.train.train_mask(gt.shape)
            total += float(gt[valid].sum(dtype=np.float64))
            count += int(valid.sum())
            if gt.shape != ref:
                import torch.nn.functional as F
                gt = F.interpolate(torch.from_numpy(gt)[None, None], size=ref, mode="nearest")[0, 0].numpy()
                valid = F.interpolate(torch.from_numpy(valid)[None, None].float(), size=ref,
                                      mode="nearest")[0, 0].numpy() > 0.5
            msum += np.where(valid, gt, 0.0)
            mcnt += valid
        if count == 0:
            raise DataError(f"'{d.train.listing}' has no valid training depth pixel in "
                            f"({o.min_depth}, {o.max_depth}) m")
        mean = total / count
        fmap = torch.from_numpy(np.where(mcnt > 0, msum / np.maximum(mcnt, 1), mean).astype(np.float32))

        def predict(sel):
            const = torch.full((len(sel), *ref), mean, dtype=torch.float32)
            return torch.stack([const, fmap.expand(len(sel), *ref)])

        res = self._evaluate(predict, d.test, test_idx, o.eval_batch_size)
        vals = res.compute()
        for row, prefix in enumerate(("floor", "floor_map")):
            for m in METRICS:
                metrics[f"{prefix}.{m}"] = float(vals[m][row])
            per_sample.update(self._per_sample(d.test, res, row, prefix))
        details["floor"] = {"train_mean_depth_m": round(mean, 6), "train_frames_read": int(len(idx)),
                            "map_hw": list(ref), "rule": "floor = train mean depth everywhere; floor_map = "
                                                         "per-pixel train mean map"}

    def _progress(self, ctx, total, desc):
        if tqdm is None:
            return None
        return tqdm(total=total, desc=desc, disable=not ctx.progress, leave=False)

    def _run_linear(self, ctx, d: _Data, fit, hold, test_idx, gen, metrics, selection, details,
                    per_sample) -> dict[str, float]:
        o = self.options
        enc = ctx.encoder
        blocks = self._linear_blocks(enc)
        ftrain = self._features(ctx, d.train, blocks, "train features")
        ftest = self._features(ctx, d.test, blocks, "test features")
        grid = self._grid(enc.info.embed_dim, generator=gen).to(ctx.device)
        batches = self._batches(ctx, d, ftrain, fit, blocks, gen)
        total = o.iterations
        every = max(1, total // 50)
        val_every = self._val_every(total)
        bar = self._progress(ctx, total, "linear depth heads")
        start = time.perf_counter()
        val_seconds = 0.0

        def predictor(feats):
            def predict(sel):
                pat = {b: torch.from_numpy(np.asarray(feats[f"patches.{b}"][sel], dtype=np.float32)).to(ctx.device)
                       for b in blocks}
                cl = {b: torch.from_numpy(np.asarray(feats[f"cls.{b}"][sel], dtype=np.float32)).to(ctx.device)
                      for b in blocks}
                return grid(pat, cl, blocks, chunk=o.head_chunk)
            return predict

        def on_step(step, losses):
            nonlocal val_seconds
            if step % every == 0 or step == total - 1:
                finite = losses[torch.isfinite(losses)]
                ctx.log_curve({"lin.train_loss": float(finite.mean()) if len(finite) else float("nan"),
                               "lin.train_loss_min": float(finite.min()) if len(finite) else float("nan")}, step)
            if val_every and ((step + 1) % val_every == 0 and step + 1 < total):
                t = time.perf_counter()
                v = np.asarray(self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()["rmse"],
                               dtype=np.float64).reshape(-1)
                ctx.log_curve({"lin.val_rmse_best": float(np.nanmin(v)), "lin.val_rmse_mean": float(np.nanmean(v))},
                              step + 1)
                val_seconds += time.perf_counter() - t
            if bar is not None:
                bar.update(1)

        train_depth_grid(grid, batches, blocks, total, self._loss(), chunk=o.head_chunk, on_step=on_step,
                         device=ctx.device)
        if bar is not None:
            bar.close()
        details["linear_train_seconds"] = round(time.perf_counter() - start - val_seconds, 3)
        details["linear_curve_seconds"] = round(val_seconds, 3)

        val = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()
        test_metric = self._evaluate(predictor(ftest), d.test, test_idx, o.eval_batch_size)
        test = test_metric.compute()
        names = grid.head_names()
        val_rmse = np.nan_to_num(np.asarray(val["rmse"], dtype=np.float64), nan=np.inf)
        ctx.log_curve({"lin.val_rmse_best": float(val_rmse.min()),
                       "lin.val_rmse_mean": float(np.nanmean(np.asarray(val["rmse"], dtype=np.float64)))}, total)
        best = int(np.argmin(val_rmse))   # first best: ties go to the smaller lr / simpler input
        for k, name in enumerate(names):
            metrics[f"{name}.val_rmse"] = float(val["rmse"][k])
            metrics[f"{name}.test_rmse"] = float(test["rmse"][k])
        out = {m: float(test[m][best]) for m in METRICS}
        out["val.rmse"] = float(val["rmse"][best])
        for m, v in out.items():
            metrics[f"lin.{m}" if m != "val.rmse" else "lin.val_rmse"] = v
        metrics["lin.n_heads"] = float(len(names))
        per_sample.update(self._per_sample(d.test, test_metric, best, "lin"))
        details["linear_images_without_valid_pixels"] = {"val": val["n_skipped"], "test": test["n_skipped"]}
        selection["linear"] = {"head": names[best], "rule": "min rmse on the part of train held out",
                               "val_rmse": out["val.rmse"], "iterations": o.iterations, "blocks": blocks,
                               "n_holdout": int(len(hold))}
        return out

    def _run_dpt(self, ctx, d: _Data, fit, hold, test_idx, gen, metrics, selection, details,
                 per_sample) -> dict[str, float]:
        o = self.options
        enc = ctx.encoder
        blocks = self._dpt_blocks(enc)
        ftrain = self._features(ctx, d.train, blocks, "train features (dpt)")
        ftest = self._features(ctx, d.test, blocks, "test features (dpt)")
        head = self._dpt(enc.info.embed_dim).to(ctx.device)
        loss_fn = self._loss()
        opt = torch.optim.AdamW(head.parameters(), lr=o.dpt_lr, betas=(0.9, 0.99), weight_decay=o.dpt_weight_decay)
        total = o.dpt_iterations
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.dpt_lr, total_steps=max(2, total),
                                                    pct_start=min(max(o.dpt_warmup, 1), total - 1) / max(2, total),
                                                    anneal_strategy="cos", div_factor=25.0,
                                                    final_div_factor=1000.0, cycle_momentum=False)
        batches = self._batches(ctx, d, ftrain, fit, blocks, gen)
        every = max(1, total // 50)
        bar = self._progress(ctx, total, "dpt depth head")
        start = time.perf_counter()
        val_every = self._val_every(total)
        val_seconds = 0.0

        def predictor(feats):
            def predict(sel):
                pat = [torch.from_numpy(np.asarray(feats[f"patches.{b}"][sel], dtype=np.float32)).to(ctx.device)
                       for b in blocks]
                cl = [torch.from_numpy(np.asarray(feats[f"cls.{b}"][sel], dtype=np.float32)).to(ctx.device)
                      for b in blocks]
                return head(pat, cl)[None]
            return predict

        head.train()
        for step in range(total):
            pat, cl, target, valid = next(batches)
            target, valid = target.to(ctx.device), valid.to(ctx.device)
            pred = head([pat[b].to(ctx.device) for b in blocks], [cl[b].to(ctx.device) for b in blocks])
            loss = loss_fn(resize_to(pred, tuple(target.shape[-2:])), target, valid, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o.dpt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), o.dpt_grad_clip)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            if step < sched.total_steps - 1:   # OneCycleLR allows total_steps - 1 steps after construction
                sched.step()
            if step % every == 0 or step == total - 1:
                ctx.log_curve({"dpt.train_loss": float(loss.detach()), "dpt.lr": lr_now}, step)
            if val_every and ((step + 1) % val_every == 0 and step + 1 < total):
                t = time.perf_counter()
                head.eval()
                v = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()["rmse"]
                ctx.log_curve({"dpt.val_rmse_curve": float(np.asarray(v).reshape(-1)[0])}, step + 1)
                head.train()
                val_seconds += time.perf_counter() - t
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        details["dpt_train_seconds"] = round(time.perf_counter() - start - val_seconds, 3)
        details["dpt_curve_seconds"] = round(val_seconds, 3)
        head.eval()

        val = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()
        test_metric = self._evaluate(predictor(ftest), d.test, test_idx, o.eval_batch_size)
        test = test_metric.compute()
        per_sample.update(self._per_sample(d.test, test_metric, 0, "dpt"))
        out = {m: float(np.asarray(test[m]).reshape(-1)[0]) for m in METRICS}
        out["val.rmse"] = float(np.asarray(val["rmse"]).reshape(-1)[0])
        ctx.log_curve({"dpt.val_rmse_curve": out["val.rmse"]}, total)
        for m, v in out.items():
            metrics[f"dpt.{m}" if m != "val.rmse" else "dpt.val_rmse"] = v
        details["dpt_images_without_valid_pixels"] = {"val": val["n_skipped"], "test": test["n_skipped"]}
        selection["dpt"] = {"lr": o.dpt_lr, "blocks": blocks, "channels": o.dpt_channels,
                            "val_rmse": out["val.rmse"], "iterations": total, "warmup": o.dpt_warmup,
                            "params": sum(p.numel() for p in head.parameters())}
        return out


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


class NYUdSuite(_DepthSuite):
    spec = _spec("depth.nyud", "NYUd v2")
    Options = NYUdOptions
    ref_hw = NYU_REF_HW

    def _split(self, data: Path, split: str) -> DepthSplit:
        return NYUDepth(data, split)

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import nyud_root
        return nyud_root(workspace)


class KittiSuite(_DepthSuite):
    spec = _spec("depth.kitti", "KITTI Eigen")
    Options = KittiOptions
    ref_hw = KB_HW

    def _split(self, data: Path, split: str) -> DepthSplit:
        o = self.options
        return KittiDepth(data, split, rgb_dir=o.rgb_dir, depth_dir=o.depth_dir, kb_crop=o.kb_crop)

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import kitti_root
        return kitti_root(workspace)
