"""Pluggable estimators (paper App. D: Depth-Pro, SAM/SAM 2, VGGT, CLIP filtering, GPT captions).

Ground truth from the source (synthetic world, ScanNet) is the default; an estimator, when
given, replaces the corresponding ground truth for every view. Each interface is a small
``typing.Protocol``, so any object (or function wrapped in a class) with the method works::

    class DepthPro:                       # pip install depth_pro; weights from the user
        def __init__(self): self.model, self.tf = depth_pro.create_model_and_transforms()
        def estimate_depth(self, rgb):
            out = self.model.infer(self.tf(rgb))
            f = float(out["focallength_px"]); H, W = rgb.shape[:2]
            K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
            return out["depth"].cpu().numpy(), K
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

__all__ = [
    "DepthEstimator",
    "Segmenter",
    "Reconstructor",
    "ImageFilter",
    "LabelScorer",
    "Captioner",
    "Estimators",
    "OpenVocabFilter",
    "POSITIVE_LABELS",
    "NEGATIVE_LABELS",
    "default_intrinsics",
]


@runtime_checkable
class DepthEstimator(Protocol):
    def estimate_depth(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 HxWx3 -> (metric depth HxW in metres along the optical axis, 3x3 K or None)."""


@runtime_checkable
class Segmenter(Protocol):
    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """uint8 HxWx3 -> (int32 HxW instance map, 0 = none; {instance id: category label})."""


@runtime_checkable
class Reconstructor(Protocol):
    def reconstruct(self, rgbs: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Views of one scene -> per view (depth HxW metres, K 3x3, cam_to_world 4x4 OpenCV axes),
        all poses in one metric frame (VGGT-style)."""


@runtime_checkable
class ImageFilter(Protocol):
    def accept(self, rgb: np.ndarray) -> tuple[bool, str]:
        """-> (keep?, reason when not kept)."""


@runtime_checkable
class LabelScorer(Protocol):
    def scores(self, rgb: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        """Probabilities (softmax over ``labels``), e.g. an open_clip zero-shot classifier."""


@runtime_checkable
class Captioner(Protocol):
    def caption(self, scene, rng: np.random.Generator) -> list[tuple[str, str]]:
        """A :class:`~.qa.builder.SceneContext` -> two (question, answer) caption turns."""


# paper Table 11
POSITIVE_LABELS = (
    "an iPhone photo of an indoor scene",
    "an iphone photo of an outdoor scene",
    "a DSLR photo of an indoor scene",
    "a DSLR of an outdoor scene",
)
NEGATIVE_LABELS = (
    "a close up shot of a single object",
    "a product displayed in front of a white background",
    "an artwork",
    "a painting",
    "a screenshot of a graphical user interface",
    "a piece of text",
    "a sketch",
)


@dataclass
class OpenVocabFilter:
    """Open-vocabulary image filter (App. D, Table 11): keep an image when the positive labels
    hold more probability than the negative ones under ``scorer`` (a CLIP-like model)."""

    scorer: LabelScorer
    positive: tuple[str, ...] = POSITIVE_LABELS
    negative: tuple[str, ...] = NEGATIVE_LABELS

    def accept(self, rgb: np.ndarray) -> tuple[bool, str]:
        labels = list(self.positive) + list(self.negative)
        p = np.asarray(self.scorer.scores(rgb, labels), np.float64)
        if p.shape != (len(labels),):
            raise ValueError(f"label scorer returned shape {p.shape}, expected ({len(labels)},)")
        pos = float(p[: len(self.positive)].sum())
        neg = float(p[len(self.positive):].sum())
        if pos > neg:
            return True, ""
        top = labels[int(np.argmax(p))]
        return False, f"open-vocabulary filter: '{top}'"


@dataclass
class Estimators:
    """Which estimators replace ground truth (None = use the source's ground truth)."""

    depth: DepthEstimator | None = None
    segmenter: Segmenter | None = None
    reconstructor: Reconstructor | None = None
    image_filter: ImageFilter | None = None
    captioner: Captioner | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        def name(x):
            return None if x is None else type(x).__name__

        return {"depth": name(self.depth) or "ground truth", "segmenter": name(self.segmenter) or "ground truth",
                "reconstructor": name(self.reconstructor) or "ground truth poses",
                "image_filter": name(self.image_filter), "captioner": name(self.captioner) or "TemplateCaptioner"}


def default_intrinsics(H: int, W: int, hfov_deg: float = 60.0) -> np.ndarray:
    f = (W / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1.0]])
