"""Spatial QA generator (paper §3.2, App. C-D): multi-turn spatial chain-of-thought conversations
(pixel -> object -> scene -> captions) and multi-view VQA, from ground-truth or estimated geometry.

Public API::

    from encoders.spatialboost.qa import QAOptions, generate_dataset, iter_samples, Generator, Estimators
    generate_dataset("workspace/data/scannet-default", "workspace/data/qa", QAOptions(samples=1000, seed=0))
"""

from .builder import SceneContext, Skip, TemplateCaptioner, Turn, build_cot_sample, build_mvqa_sample, to_llava
from .dataset import (CARD_FILE, DATA_FILE, Generator, GenStats, export_json, generate_dataset, iter_samples,
                      log_dataset_to_mlflow)
from .estimators import (Captioner, DepthEstimator, Estimators, ImageFilter, LabelScorer, OpenVocabFilter,
                         Reconstructor, Segmenter)
from .options import QAOptions
from .scene import ViewGeometry, compute_view_geometry, fused_objects, single_view_objects
from .sources import ImageFolderSource, ScanNetSource, ViewError, open_source

__all__ = [
    "QAOptions", "generate_dataset", "iter_samples", "Generator", "GenStats", "export_json", "log_dataset_to_mlflow",
    "DATA_FILE", "CARD_FILE", "Estimators", "DepthEstimator", "Segmenter", "Reconstructor", "ImageFilter",
    "LabelScorer", "Captioner", "OpenVocabFilter", "TemplateCaptioner", "SceneContext", "Skip", "Turn",
    "build_cot_sample", "build_mvqa_sample", "to_llava", "ViewGeometry", "compute_view_geometry", "fused_objects",
    "single_view_objects", "open_source", "ScanNetSource", "ImageFolderSource", "ViewError",
]
