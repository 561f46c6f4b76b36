"""Encoder specs: ``scheme:target?key=value&...`` resolved through the one encoder registry.

Examples: ``timm:vit_small_patch14_dinov2?ckpt=PATH``, ``hf:/models/dinov2-small``,
``open_clip:ViT-B-16?ckpt=PATH``, ``torchhub:~/dinov2:dinov2_vits14?ckpt=PATH``, ``boosted:PATH``,
``builtin:dinov2-s14-focus``. The registry maps the scheme to a factory ``(target, options, spec)``.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from encoders.base import Encoder
from harness.registry import ENCODERS


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    if ":" not in spec:
        raise ValueError(f"encoder spec '{spec}' has no scheme; expected one of "
                         f"{', '.join(s + ':...' for s in ENCODERS.names())}")
    scheme, rest = spec.split(":", 1)
    target, _, query = rest.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return scheme, target, opts


def build_encoder(spec: str) -> Encoder:
    scheme, target, opts = parse_spec(spec)
    factory = ENCODERS.get(scheme)
    enc = factory(target, opts, spec)
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()
