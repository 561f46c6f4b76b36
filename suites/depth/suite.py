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
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.device import seed_everything
from harness.samples import PerSample
from harness.suite import RunContext, Suite, SuiteResult
from heads.depth import CPU_LRS
from suites.depth.datasets import KB_HW, NYU_REF_HW, DepthSplit, KittiDepth, NYUDepth
from suites.depth.figures import error_maps, figure_indices
from suites.depth.floors import DepthFloors
from suites.depth.metrics import METRICS
from suites.depth.options import KittiOptions, NYUdOptions, _spec
from suites.depth.protocol import DepthProtocol
from suites.depth.training import DepthTraining
from suites.images import DataError


class _DepthSuite(DepthProtocol, DepthTraining, DepthFloors, Suite):
    Options: ClassVar[type] = NYUdOptions
    ref_hw: ClassVar[tuple[int, int]] = NYU_REF_HW    # frame size train_crop is given at

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
        figure = error_maps(first["predict"], d.test, figure_indices(test_idx), o.min_depth, o.max_depth,
                            f"{prefix} ({selection[order[0]].get('head', 'dpt')}) on {enc.info.spec}")
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample,
                           figures={"error_maps": figure})


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
