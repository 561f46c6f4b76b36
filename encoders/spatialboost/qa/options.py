"""Generation options (frozen, validated at construction)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["QAOptions", "LEVELS", "ORDERS", "TASKS", "METRICS", "DEFAULT_WINDOWS"]

LEVELS = ("pix", "obj", "scene")
ORDERS = ("forward", "reverse", "random")
TASKS = ("cot", "mvqa", "caption")
METRICS = ("auto", "lpips", "ssim", "pose")
# Perceptual-distance windows for picking view pairs. LPIPS: the paper's (App. C, Eq. 2).
# ssim (= 1 - SSIM on 64x64 grey images) and pose: recalibrated on the synthetic world so that
# the window keeps the same middle band of pairs (see README "View pairs").
DEFAULT_WINDOWS = {"lpips": (0.35, 0.65), "ssim": (0.40, 0.75), "pose": (0.25, 0.95)}


@dataclass(frozen=True)
class QAOptions:
    """What to generate.

    * ``task``: ``cot`` = the 12-turn multi-turn spatial reasoning data (stage 3, §3.2/App. D);
      ``mvqa`` = multi-view VQA for stage 2 (App. C: common, multiple-choice, adversarial);
      ``caption`` = one-turn image captions for stage 1 (the alignment data, LLaVA-Pretrain-558K format).
    * ``order``: ``forward`` pixel->object->scene (paper default), ``reverse``, ``random`` (Table 7);
      the two caption turns stay last.
    * ``levels``: subset of pix/obj/scene (Table 15); each kept level keeps its turn count (5/4/1).
    * ``views``: 1 (single-view) or 2/4/8 (multi-view, Table 16 / App. D).
    * ``samples``: number of samples to write (None = one per eligible view / view group);
      views are cycled with fresh randomness when more samples than views are asked for.
    * ``captions``: append the two caption turns.
    * ``rationale``: in forward order the scene-level answer recalls the centres found earlier (CoT).
    * ``metric``/``window``: perceptual distance for view pairs (None window = metric default).
    * ``strict``: raise on a bad view instead of counting it as a skip.
    * ``label_map``: ScanNet's ``scannetv2-labels.combined.tsv`` naming the ``label-filt`` ids (None = look
      beside the scenes; without one, categories read "object <id>" and the card says so).
    """

    task: str = "cot"
    order: str = "forward"
    levels: tuple[str, ...] = LEVELS
    views: int = 1
    samples: int | None = None
    seed: int = 0
    captions: bool = True
    rationale: bool = True
    point_format: str = "normalized"
    min_object_pixels: int = 30
    min_object_points: int = 20
    metric: str = "auto"
    window: tuple[float, float] | None = None
    strict: bool = False
    dense_backprojection: bool = True
    label_map: str | None = None

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"QAOptions.{name}={getattr(self, name)!r}: {why}")

        if self.task not in TASKS:
            bad("task", f"must be one of {TASKS}")
        if self.order not in ORDERS:
            bad("order", f"must be one of {ORDERS}")
        lv = self.levels
        if isinstance(lv, str):
            lv = tuple(x.strip() for x in lv.replace("+", ",").split(",") if x.strip())
        lv = tuple(lv)
        if not lv or any(x not in LEVELS for x in lv) or len(set(lv)) != len(lv):
            raise ValueError(f"QAOptions.levels={self.levels!r}: must be a non-empty subset of {LEVELS} without repeats")
        object.__setattr__(self, "levels", tuple(x for x in LEVELS if x in lv))
        if isinstance(self.views, bool) or self.views not in (1, 2, 4, 8):
            bad("views", "must be 1, 2, 4 or 8")
        if self.task == "mvqa" and self.views != 2:
            object.__setattr__(self, "views", 2)
        if self.task == "caption" and self.views != 1:
            bad("views", "caption samples are single-view (views=1)")
        if self.samples is not None and (isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1):
            bad("samples", "must be a positive integer or None")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            bad("seed", "must be an integer")
        if self.point_format not in ("normalized", "pixel"):
            bad("point_format", "must be 'normalized' or 'pixel'")
        if self.metric not in METRICS:
            bad("metric", f"must be one of {METRICS}")
        if self.window is not None:
            w = tuple(float(x) for x in self.window)
            if len(w) != 2 or not (0.0 <= w[0] < w[1]):
                bad("window", "must be (low, high) with 0 <= low < high")
            object.__setattr__(self, "window", w)
        if self.min_object_pixels < 1 or self.min_object_points < 3:
            raise ValueError("QAOptions: min_object_pixels must be >= 1 and min_object_points >= 3")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["levels"] = list(self.levels)
        d["window"] = None if self.window is None else list(self.window)
        return d
