"""``timm:NAME?ckpt=PATH``: any timm ViT through ``forward_intermediates``; published checkpoint layouts go
through the ``checkpoint_filter_fn`` of the model's own timm module."""
from __future__ import annotations

from torch import nn

from encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderInfo, LayerFeatures
from encoders.checkpoint import CheckpointError, load_into

from .common import EncoderSpecError, flag, literal_option, seeded_build


class TimmEncoder(Encoder):
    """Any timm ViT through ``forward_intermediates(norm=False)`` plus the model's own final ``norm``."""

    def __init__(self, model: nn.Module, spec: str, mean=None, std=None):
        super().__init__()
        self.model = model.eval()
        cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        if mean is not None:
            cfg.update(mean=mean, std=std)
        ps = model.patch_embed.patch_size
        size = getattr(model.patch_embed, "img_size", None) or cfg.get("input_size", (3, 224, 224))[1:]
        self.info = EncoderInfo(
            spec=spec, embed_dim=model.embed_dim, num_layers=len(model.blocks),
            patch_size=ps[0] if isinstance(ps, (tuple, list)) else ps,
            num_prefix_tokens=getattr(model, "num_prefix_tokens", 1),
            image_size=tuple(int(s) for s in size),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
            interpolation=cfg.get("interpolation", "bicubic"), family="timm")

    def _features(self, images, block_ids):
        outs = self.model.forward_intermediates(
            images, indices=block_ids, norm=False, output_fmt="NCHW", return_prefix_tokens=True,
            intermediates_only=True, stop_early=True)
        feats = {}
        for i, out in zip(block_ids, outs):
            # (spatial, prefix) pairs; a bare spatial map when the model has no prefix tokens (SigLIP)
            spatial, prefix = out if isinstance(out, (tuple, list)) else (out, None)
            spatial = spatial.permute(0, 2, 3, 1)
            cls = prefix[:, 0] if prefix is not None and prefix.shape[1] > 0 else spatial.mean((1, 2))
            feats[i] = LayerFeatures(cls=cls, patches=spatial)
        return feats

    def _norm_patches(self, x):
        return self.model.norm(x)

    def _pool(self, normed_last):
        pool = getattr(self.model, "attn_pool", None)
        if pool is None or self.info.num_prefix_tokens:
            return normed_last
        # SigLIP-style attention pooling (timm's forward_head with pre_logits): the pooled embedding
        cls = self.model.fc_norm(pool(normed_last.patches.flatten(1, 2)))
        return LayerFeatures(cls=cls, patches=normed_last.patches)


def build_timm(target: str, opts: dict, spec: str, workspace=None) -> Encoder:
    import timm
    # any other option is an architecture keyword for timm.create_model (depth=6, img_size=518, ...)
    kwargs = {k: literal_option(v) for k, v in opts.items() if k not in ("ckpt", "remap", "random", "random_seed")}
    kwargs.setdefault("dynamic_img_size", True)
    ckpt = opts.get("ckpt")
    if not ckpt and not flag(opts, "random"):
        raise EncoderSpecError(
            f"'{spec}': weights are never downloaded at run time. Pass ?ckpt=PATH (safetensors or .pth "
            f"state dict for timm '{target}'), or ?random=1 for a randomly initialised model.")
    try:
        with seeded_build(opts):
            model = timm.create_model(target, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:   # an option that is not a keyword of the model's constructor
        import re
        bad = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        what = f"option '{bad.group(1)}'" if bad else f"one of the options {sorted(kwargs)}"
        raise EncoderSpecError(
            f"'{spec}': {what} is not an argument of timm model '{target}' (every option except ckpt, remap "
            f"random and random_seed is passed to timm.create_model): {e}") from None
    except RuntimeError as e:
        raise EncoderSpecError(f"'{spec}': timm cannot build '{target}': {e}") from None
    if ckpt:
        load_into(model, ckpt, opts.get("remap"), filter_fn=_timm_filter(model))
    return TimmEncoder(model, spec)


def _timm_filter(model: nn.Module):
    """The ``checkpoint_filter_fn`` of the timm module that defines the model's class (what timm itself
    applies to pretrained weights): it knows the published layouts (DINOv2/DINOv3 hub ``.pth``, OpenAI
    CLIP, open_clip trunks) and resamples position tables to the model's grid."""
    import sys
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if not callable(fn):
        return None

    def filtered(sd, m):
        own = m.state_dict()
        # timm drops DINOv3 qkv biases when the model has none (its non-"_qkvb" variants, right for the
        # checkpoints whose biases are all zero): refuse instead of silently losing non-zero ones
        lost = [k for k, v in sd.items() if k.endswith("attn.qkv.bias") and bool(v.any())
                and k.replace("qkv.bias", "q_bias") not in own and k not in own]
        if lost and "storage_tokens" in sd:
            raise CheckpointError(
                f"the checkpoint has non-zero attention biases ({lost[0]}, ...) but timm model "
                f"'{type(m).__name__}' has none: use the '_qkvb' variant of the model name "
                f"(e.g. vit_small_patch16_dinov3_qkvb)")
        # a classifier / projection head the checkpoint carries (CLIP's proj becomes head.*) has no place
        # in the headless encoder (num_classes=0)
        return {k: v for k, v in fn(sd, m).items() if k in own or not k.startswith("head.")}
    return filtered
