"""Tiny, randomly initialised backbones of every family the dual-channel wrapper supports (no downloads)."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import _dinov2_hub_replica as hub_replica


@dataclass
class Family:
    name: str
    build: Callable[[int], nn.Module]                      # seed -> model (eval mode)
    image_size: int
    run: Callable[[nn.Module, torch.Tensor], list]         # model, images -> list of output tensors
    n_blocks: int
    kind: str

    def images(self, seed: int = 0, batch: int = 2) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, self.image_size, self.image_size, generator=g)


def _seeded(fn):
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return fn().eval()
    return build


def _timm():
    import timm
    return timm.create_model("vit_small_patch16_224", pretrained=False, depth=2, embed_dim=64, num_heads=2,
                             img_size=32, num_classes=0)


def _run_timm(m, x):
    return [m.forward_features(x), m.forward_head(m.forward_features(x))]


def _hf(model_cls: str, cfg_cls: str):
    def make():
        import transformers
        cfg = getattr(transformers, cfg_cls)(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64, image_size=32, patch_size=8)
        return getattr(transformers, model_cls)(cfg)
    return make


def _run_hf(m, x):
    out = m(pixel_values=x)
    return [out.last_hidden_state, out.pooler_output]


_OPEN_CLIP_NAME = "SB-Tiny-ViT-test"


def _open_clip():
    import open_clip
    if _OPEN_CLIP_NAME not in open_clip.list_models():
        cfg = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
               "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
        tmp = tempfile.mkdtemp(prefix="sb_open_clip_")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        path = os.path.join(tmp, f"{_OPEN_CLIP_NAME}.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        open_clip.add_model_config(path)
    return open_clip.create_model(_OPEN_CLIP_NAME, pretrained=None).visual


def _run_plain(m, x):
    return [m(x)]


def _hub_replica():
    return hub_replica.DinoVisionTransformer(img_size=28, patch_size=14, embed_dim=32, depth=4, num_heads=2,
                                             block_chunks=2)


FAMILIES = [
    Family("timm_vit", _seeded(_timm), 32, _run_timm, 2, "fused_qkv"),
    Family("hf_dinov2", _seeded(_hf("Dinov2Model", "Dinov2Config")), 32, _run_hf, 2, "separate_qkv"),
    Family("hf_clip", _seeded(_hf("CLIPVisionModel", "CLIPVisionConfig")), 32, _run_hf, 2, "separate_qkv"),
    Family("hf_siglip", _seeded(_hf("SiglipVisionModel", "SiglipVisionConfig")), 32, _run_hf, 2,
           "separate_qkv"),
    Family("open_clip", _seeded(_open_clip), 32, _run_plain, 2, "mha"),
    Family("dinov2_hub_replica", _seeded(_hub_replica), 28, _run_plain, 4, "fused_qkv"),
]

DINOV2_REPO = os.environ.get("SPATIALBOOST_DINOV2_REPO")


def _hub_real():
    return torch.hub.load(DINOV2_REPO, "dinov2_vits14", source="local", pretrained=False, img_size=28,
                          block_chunks=0)


if DINOV2_REPO and os.path.isfile(os.path.join(DINOV2_REPO, "hubconf.py")):
    FAMILIES.append(Family("dinov2_hub_real", _seeded(_hub_real), 28, _run_plain, 12, "fused_qkv"))
