"""Protocol options of the segmentation suites (the defaults are DINOv2's linear / +ms configs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.config import field

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
