"""Encoder specs: ``scheme:target?key=value&...`` resolved through the one encoder registry.

Examples: ``timm:vit_small_patch14_dinov2?ckpt=PATH``, ``hf:/models/dinov2-small``,
``open_clip:ViT-B-16?ckpt=PATH``, ``torchhub:~/dinov2:dinov2_vits14?ckpt=PATH``, ``boosted:PATH``,
``builtin:dinov2-s14-focus``. The registry (harness/registry.py) maps the scheme to a factory
``(target, options, spec, workspace)``; this module re-exports its two functions for plugin code.
"""
from __future__ import annotations

from harness.registry import build_encoder, parse_encoder_spec as parse_spec

__all__ = ["build_encoder", "parse_spec"]
