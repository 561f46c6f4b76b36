"""One generic registry for encoders, suites, heads and metrics.

Entries are registered with a decorator, as lazy ``"module:attr"`` strings (so nothing depends on import
side effects and heavy suites import only when asked for), or by outside packages through the Python
entry-point group ``spatialboost.<kind>``.
"""
from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """Unknown name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """``@reg.register("name")`` on a class/function, or ``reg.register("name", "pkg.mod:attr")``."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T | str) -> None:
        if name in self._entries and self._entries[name] is not obj:
            existing = self._entries[name]
            # re-registering the same lazy target after import is fine
            if not (isinstance(existing, str) and not isinstance(obj, str)
                    and existing == f"{obj.__module__}:{getattr(obj, '__qualname__', '')}"):
                raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = obj

    # -- lookup -------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=f"spatialboost.{self.kind}"):
            self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(self.names()) or '(none)'}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._entries[name] = entry = obj
        return entry


ENCODERS: Registry = Registry("encoders")   # spec scheme -> factory(target, opts, spec, workspace) -> Encoder
SUITES: Registry = Registry("suites")       # suite name -> Suite class
HEADS: Registry = Registry("heads")         # head name -> head factory
METRICS: Registry = Registry("metrics")     # metric name -> Metric class
LMS: Registry = Registry("lms")             # loader name -> load(spec, seed, models_dir) -> causal LM
LMS.register("default", "encoders.spatialboost.lm:load_lm")   # builtin:smollm2-135m, builtin:tiny-qwen2, [hf:]DIR


def build_lm(spec: str, workspace=None, seed: int = 0):
    """The causal LM of ``spec`` (SpatialBoost's loader: frozen-LM heads and the trainer share it);
    ``workspace.models`` holds converted weights."""
    return LMS.get("default")(spec, seed, models_dir=workspace.models if workspace is not None else None)

# Built-in entries, lazily imported on first use.
for _scheme, _target in {
    "timm": "encoders.adapters.timm_vit:build_timm",
    "hf": "encoders.adapters.hf:build_hf",
    "open_clip": "encoders.adapters.openclip:build_open_clip",
    "torchhub": "encoders.adapters.torchhub:build_torchhub",
    "builtin": "encoders.builtin:build_builtin",
    "boosted": "encoders.spatialboost.boosted:build_boosted",
    "random": "encoders.random_init:build_random",
}.items():
    ENCODERS.register(_scheme, _target)

for _suite, _target in {
    "cls.imagenet": "suites.classification.suite:ClassificationSuite",
    "depth.nyud": "suites.depth.suite:NYUdSuite",
    "depth.kitti": "suites.depth.suite:KittiSuite",
    "seg.ade20k": "suites.segmentation.suite:ADE20KSuite",
    "seg.voc": "suites.segmentation.suite:VOCSuite",
    "retrieval.roxford": "suites.retrieval.suite:ROxfordSuite",
    "retrieval.rparis": "suites.retrieval.suite:RParisSuite",
    "retrieval.met": "suites.retrieval.suite:MetSuite",
    "retrieval.amstertime": "suites.retrieval.suite:AmsterTimeSuite",
    "cortexbench.metaworld": "suites.cortexbench.suite:MetaWorldSuite",
    "cortexbench.dmc": "suites.cortexbench.suite:DMCSuite",
    "cortexbench.adroit": "suites.cortexbench.suite:AdroitSuite",
    "cortexbench.trifinger": "suites.cortexbench.suite:TriFingerSuite",
    "lexicon3d.semantic": "suites.lexicon3d.semantic:SemanticSuite",
    "lexicon3d.registration": "suites.lexicon3d.registration:RegistrationSuite",
    "lexicon3d.scanrefer": "suites.lexicon3d.grounding:ScanReferSuite",
    "lexicon3d.scanqa": "suites.lexicon3d.qa3d:ScanQASuite",
    "lexicon3d.sqa3d": "suites.lexicon3d.qa3d:SQA3DSuite",
}.items():
    SUITES.register(_suite, _target)


def parse_encoder_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``scheme:target?key=value&...`` -> (scheme, target, options)."""
    from urllib.parse import parse_qsl
    if ":" not in spec:
        raise RegistryError(f"encoder spec '{spec}' has no scheme; expected one of "
                            f"{', '.join(s + ':...' for s in ENCODERS.names())}")
    scheme, rest = spec.split(":", 1)
    target, _, query = rest.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return scheme, target, opts


def build_encoder(spec: str, workspace=None):
    """The frozen, eval-mode encoder of ``spec``; ``workspace`` (a :class:`harness.workspace.Workspace`;
    default: the one ``$SPATIALBOOST_HOME`` names) holds converted weights (models/) and the tracking store
    that ``boosted:runs:/...`` resolves against."""
    if workspace is None:
        from harness.workspace import open_workspace
        workspace = open_workspace()
    scheme, target, opts = parse_encoder_spec(spec)
    factory = ENCODERS.get(scheme)
    enc = factory(target, opts, spec, workspace)
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()


# -- HEADS and METRICS ------------------------------------------------------------------------------------
class Described:
    """A registry entry that names its implementation lazily (``"module:attr"``, imported by ``load()``) and
    says in one line what it is (``describe``, what ``spatialboost ls`` prints), so listing imports nothing."""

    def __init__(self, target: str, describe: str, used_by: str = ""):
        self.target, self.describe, self.used_by = target, describe, used_by

    def load(self):
        module_name, _, attr = self.target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def __repr__(self) -> str:
        return f"Described({self.target!r})"


# Head types, named <task>.<head> (the head is what `--head` selects in that task's suites).
for _name, (_target, _describe, _used_by) in {
    "cls.linear": ("heads.linear_grid:LinearGrid", "DINOv2 linear classification grid: CLS of the last n blocks "
                   "(+ avgpool) x lr heads in one pass, SGD, selected on held-out train", "cls.imagenet"),
    "cls.knn": ("heads.knn:knn_predict", "DINOv2 weighted kNN classifier: cosine similarity, votes exp(sim/T), "
                "k selected on held-out train", "cls.imagenet"),
    "depth.linear": ("heads.depth:LinearDepthGrid", "DINOv2 linear depth grid: 1x1 conv to 256 bins on patch tokens "
                     "(1/4 blocks, +CLS) x lr heads in one pass, SigLoss", "depth.nyud, depth.kitti"),
    "depth.dpt": ("heads.dpt:DPTDepthHead", "DPT decoder on 4 blocks (reassemble + fusion), AdamW one-cycle "
                  "(a one-head grid: heads.dpt.train_dpt)", "depth.nyud, depth.kitti"),
    "seg.linear": ("heads.segmentation:StackedBNLinear", "DINOv2 BNHead: BatchNorm + 1x1 conv on the last block's "
                   "patch tokens, one head per lr, AdamW poly, slide inference", "seg.ade20k, seg.voc"),
    "seg.ms": ("heads.segmentation:StackedBNLinear", "DINOv2 +ms: the BNHead on the last 4 blocks resized and "
               "concatenated (heads.segmentation.resize_concat), multi-scale + flip slide inference",
               "seg.ade20k, seg.voc"),
    "retrieval.cosine": ("suites.retrieval.search:rank_gallery", "cosine ranking of the gallery by L2-normalised "
                         "CLS features (no training)", "retrieval.roxford, .rparis, .amstertime"),
    "retrieval.knn": ("suites.retrieval.metrics:knn_classify", "Met's non-parametric kNN classifier on the nearest "
                      "database items (confidence from exp(t * similarity))", "retrieval.met"),
    "cortexbench.bc_mlp": ("heads.bc_policy:BCPolicy", "CortexBench behaviour-cloning policy: BatchNorm + MLP on "
                           "3-frame fused embeddings (+ proprioception)", "cortexbench.*"),
    "lexicon3d.linear": ("torch.nn:Linear", "Lexicon3D semantic probe: one Linear(D, 20) on lifted point features, "
                         "cross-entropy, epoch selected on held-out train scenes", "lexicon3d.semantic"),
    "lexicon3d.regtr": ("heads.regtr:RegTRHead", "REGTR-style registration head: 3D sine positions, self + cross "
                        "attention, correspondence + overlap heads, overlap-weighted Kabsch", "lexicon3d.registration"),
    "lexicon3d.fusion": ("heads.grounding:GroundingHead", "ScanRefer grounding: object self-attention + cross-"
                         "attention to text tokens, one confidence per object", "lexicon3d.scanrefer"),
    "lexicon3d.qformer": ("heads.qformer:QFormer", "3D-LLM-style Q-Former: learned queries cross-attend point "
                          "features, projected as a soft prefix of a frozen LM", "lexicon3d.scanqa, lexicon3d.sqa3d"),
    "lexicon3d.classify": ("heads.qformer:QAClassifier", "closed-set answer classifier: the Q-Former body with the "
                           "question's text tokens, no LM (the CPU-sized QA head)", "lexicon3d.scanqa, lexicon3d.sqa3d"),
}.items():
    HEADS.register(_name, Described(_target, _describe, _used_by))

# Metric implementations, named <task>.<metric>.
for _name, (_target, _describe, _used_by) in {
    "cls.topk": ("heads.linear_grid:topk_hits", "top-k accuracy from per-head logits, per image (top-1, top-5)",
                 "cls.imagenet"),
    "depth.errors": ("suites.depth.metrics:DepthMetric", "monocular depth errors per image (rmse, abs_rel, sq_rel, "
                     "rmse_log, log10, silog, delta1-3) on the benchmark crop, mean over images",
                     "depth.nyud, depth.kitti"),
    "seg.miou": ("suites.segmentation.inference:SegIoU", "mmseg IoUMetric: mIoU, aAcc, mAcc from per-class "
                 "intersection/union areas summed over images", "seg.ade20k, seg.voc"),
    "retrieval.map": ("suites.retrieval.metrics:evaluate_revisitop", "revisited Oxford/Paris mAP and mP@k at the "
                      "easy / medium / hard protocols", "retrieval.roxford, retrieval.rparis"),
    "retrieval.gap": ("suites.retrieval.metrics:evaluate_met", "Met GAP (global average precision), GAP without "
                      "distractors, accuracy on non-distractors", "retrieval.met"),
    "retrieval.amstertime": ("suites.retrieval.metrics:evaluate_amstertime", "AmsterTime mAP and P@k both ways "
                             "(old->new, new->old) over the full gallery", "retrieval.amstertime"),
    "cortexbench.success": ("suites.cortexbench.suite:aggregate", "rollout success / score: best and last "
                            "evaluation epoch per seed, mean and std over seeds", "cortexbench.*"),
    "lexicon3d.miou": ("suites.lexicon3d.semantic:scores", "3D semantic point accuracy and mIoU from a dataset-level "
                       "confusion matrix (nanmean over classes)", "lexicon3d.semantic"),
    "lexicon3d.registration": ("suites.lexicon3d.regmetrics:pair_metrics", "RRE (deg), RTE (m) and RR@0.05 m "
                               "(RMSE of ground-truth correspondences under the estimate)", "lexicon3d.registration"),
    "lexicon3d.captions": ("suites.lexicon3d.language.metrics:caption_scores", "EM@1 and BLEU-1..4, METEOR, "
                           "ROUGE-L, CIDEr through pycocoevalcap", "lexicon3d.scanqa, lexicon3d.sqa3d"),
}.items():
    METRICS.register(_name, Described(_target, _describe, _used_by))
