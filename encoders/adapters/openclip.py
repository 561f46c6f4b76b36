"""``open_clip:ARCH?ckpt=PATH``: open_clip ViT visual towers, and its timm towers (SigLIP, SigLIP2)."""
from __future__ import annotations

from torch import nn

from encoders.base import CLIP_MEAN, CLIP_STD, Encoder, EncoderInfo, LayerFeatures
from encoders.checkpoint import load_into

from .common import EncoderSpecError, flag, seeded_build
from .timm_vit import TimmEncoder


class OpenClipEncoder(Encoder):
    def __init__(self, visual: nn.Module, spec: str, mean, std):
        super().__init__()
        self.model = visual.eval()
        ps = visual.patch_size
        size = visual.image_size
        self.info = EncoderInfo(
            spec=spec, embed_dim=int(visual.transformer.width), num_layers=len(visual.transformer.resblocks),
            patch_size=int(ps[0] if isinstance(ps, (tuple, list)) else ps), num_prefix_tokens=1,
            image_size=tuple(size) if isinstance(size, (tuple, list)) else (size, size),
            mean=tuple(mean), std=tuple(std), family="open_clip")

    def _features(self, images, block_ids):
        out = self.model.forward_intermediates(images, indices=block_ids, normalize_intermediates=False,
                                               intermediates_only=True, output_fmt="NLC",
                                               output_extra_tokens=True, stop_early=True)
        h, w = images.shape[-2] // self.info.patch_size, images.shape[-1] // self.info.patch_size
        feats = {}
        for i, sp, pre in zip(block_ids, out["image_intermediates"], out["image_intermediates_prefix"]):
            feats[i] = LayerFeatures(cls=pre[:, 0], patches=sp.reshape(sp.shape[0], h, w, -1))
        return feats

    def _norm_patches(self, x):
        return self.model.ln_post(x)


def build_open_clip(target: str, opts: dict, spec: str, workspace=None) -> Encoder:
    import open_clip
    ckpt = opts.get("ckpt")
    if not ckpt and not flag(opts, "random"):
        raise EncoderSpecError(f"'{spec}': pass ?ckpt=PATH (open_clip state dict) or ?random=1; "
                               "weights are never downloaded at run time.")
    try:
        with seeded_build(opts):
            model = open_clip.create_model(target, pretrained=None)
    except RuntimeError as e:
        raise EncoderSpecError(f"'{spec}': open_clip cannot build '{target}': {e}") from None
    visual = model.visual
    trunk = getattr(visual, "trunk", None)   # open_clip's timm towers (SigLIP, SigLIP2, ...)
    if not hasattr(visual, "transformer") and not (trunk is not None and hasattr(trunk, "forward_intermediates")
                                                   and hasattr(trunk, "blocks")):
        raise EncoderSpecError(f"'{spec}': only ViT visual towers are supported (got {type(visual).__name__})")
    if ckpt:
        load_into(visual, ckpt, opts.get("remap"))
    if trunk is not None:
        # the tower is a timm ViT: its own preprocessing (open_clip falls back to OpenAI's statistics
        # when no pretrained tag is named, which is wrong for SigLIP's 0.5/0.5)
        cfg = getattr(trunk, "pretrained_cfg", {}) or {}
        return TimmEncoder(trunk, spec, mean=cfg.get("mean", CLIP_MEAN), std=cfg.get("std", CLIP_STD))
    mean = getattr(visual, "image_mean", None) or CLIP_MEAN
    std = getattr(visual, "image_std", None) or CLIP_STD
    return OpenClipEncoder(visual, spec, mean, std)
