"""Protocol options of the depth suites (the Options defaults are the paper's protocol) and their SuiteSpec."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.config import ConfigError, check_range, field
from harness.suite import MetricSpec, SuiteSpec
from heads.depth import DEPTH_LRS


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
    return SuiteSpec(name=name, version="3", task="depth", heads=("linear", "dpt"), metrics=tuple(ms),
                     primary="rmse", validation="val.rmse", default_head="linear,dpt", paper_table="Table 1",
                     description=f"{title}: DINOv2 linear depth grid (lr x layers {{1,4}} x CLS concat) selected on "
                                 "held-out train, or a DPT head; per-image metrics on the test split.")
