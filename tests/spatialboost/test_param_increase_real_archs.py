"""Parameter increase of dual-channel attention on the paper's real encoder architectures (paper App. A.2:
"+30% in OpenCLIP and SigLIPv2 and +25% in DINOv2 and DINOv3"). Built on the meta device: no weights,
no memory, no downloads."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from encoders.spatialboost.dual_attention import DualChannelConfig, wrap_dual_channel


def _timm(name):
    import timm
    return lambda: timm.create_model(name, pretrained=False)


def _open_clip(name):
    def build():
        import open_clip
        logging.disable(logging.WARNING)
        try:
            return open_clip.create_model(name, pretrained=None, device="meta").visual
        finally:
            logging.disable(logging.NOTSET)
    return build


def _hf_siglip_so400m():
    from transformers import SiglipVisionConfig, SiglipVisionModel
    return SiglipVisionModel(SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                                num_attention_heads=16, patch_size=16, image_size=384))


def _hf_dinov2_large():
    from transformers import Dinov2Config, Dinov2Model
    return Dinov2Model(Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                    intermediate_size=4096, patch_size=14, image_size=518))


ARCHS = {   # name: (builder, paper's figure)
    "dinov2_vitl14 (timm)": (_timm("vit_large_patch14_dinov2"), 25),
    "dinov2_vitl14 (HF)": (_hf_dinov2_large, 25),
    "dinov3_vitl16 (timm)": (_timm("vit_large_patch16_dinov3"), 25),
    "openclip ViT-L-14": (_open_clip("ViT-L-14"), 30),
    "siglip2 so400m/16 (open_clip, timm tower)": (_open_clip("ViT-SO400M-16-SigLIP2-384"), 30),
    "siglip2 so400m/16 dims (HF)": (_hf_siglip_so400m, 30),
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_real_architecture_increase(name):
    build, paper = ARCHS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            full, shared = build(), build()
    r_full = wrap_dual_channel(full)
    r_qkv = wrap_dual_channel(shared, DualChannelConfig(share_out_proj=True))
    print(f"\n[{name}] paper +{paper}% | Attn+ = copy of QKV and output projection: +{r_full.increase_pct:.1f}% "
          f"({r_full.params_before / 1e6:.1f}M -> {r_full.params_after / 1e6:.1f}M, {len(r_full.wrapped)} layers) | "
          f"QKV-only Attn+: +{r_qkv.increase_pct:.1f}%")
    # attention is 4d^2 of the ~12d^2 of a ViT block with MLP ratio 4 (so400m: ratio 3.7)
    assert 32.5 < r_full.increase_pct < 34.0
    assert 24.5 < r_qkv.increase_pct < 25.5
