"""``torchhub:REPO_DIR:ENTRY?ckpt=PATH``: DINOv2/DINOv3-style local torch.hub repos
(``get_intermediate_layers``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from encoders.base import Encoder, EncoderInfo, LayerFeatures
from encoders.checkpoint import load_into

from .common import EncoderSpecError, flag, literal_option, rebuild_from_spec, seeded_build


class HubEncoder(Encoder):
    """DINOv2/DINOv3-style repos: ``get_intermediate_layers(n, reshape, return_class_token, norm)``."""

    def __init__(self, model: nn.Module, spec: str, image_size: int = 224):
        super().__init__()
        self.model = model.eval()
        ps = model.patch_size if hasattr(model, "patch_size") else model.patch_embed.patch_size
        ps = ps[0] if isinstance(ps, (tuple, list)) else ps
        self.info = EncoderInfo(
            spec=spec, embed_dim=int(model.embed_dim), num_layers=len(model.blocks), patch_size=int(ps),
            num_prefix_tokens=1 + int(getattr(model, "num_register_tokens", 0) or 0),
            image_size=(image_size, image_size), family="torchhub")

    def __reduce__(self):
        # hub classes live in a dynamically loaded hubconf module that pickle cannot import: rebuild
        # from the spec (same repo dir on this machine) and carry the current weights
        return rebuild_from_spec, (self.info.spec, self.state_dict())

    def _features(self, images, block_ids):
        outs = self.model.get_intermediate_layers(images, n=block_ids, reshape=True, return_class_token=True,
                                                  norm=False)
        return {i: LayerFeatures(cls=cls, patches=sp.permute(0, 2, 3, 1)) for i, (sp, cls) in zip(block_ids, outs)}

    def _norm_patches(self, x):
        return self.model.norm(x)

    def _norm_cls(self, x):
        # DINOv3 may untie the class/register-token norm from the patch norm (``cls_norm``)
        if getattr(self.model, "untie_cls_and_patch_norms", False):
            return self.model.cls_norm(x)
        return self.model.norm(x)


def build_torchhub(target: str, opts: dict, spec: str, workspace=None) -> Encoder:
    repo, _, entry = target.rpartition(":")
    if not repo or not entry:
        raise EncoderSpecError(f"'{spec}': expected torchhub:REPO_DIR:ENTRY (e.g. torchhub:~/dinov2:dinov2_vits14)")
    repo_dir = Path(repo).expanduser()
    if not (repo_dir / "hubconf.py").is_file():
        raise EncoderSpecError(f"'{spec}': '{repo_dir}' is not a local torch.hub repo (no hubconf.py); "
                               "clone it once and pass its folder")
    # any other option is a keyword of the hub entry (the DINOv2/DINOv3 entries pass them to the model)
    kwargs = {k: literal_option(v) for k, v in opts.items()
              if k not in ("ckpt", "remap", "random", "random_seed", "img_size")}
    try:
        with seeded_build(opts):
            model = torch.hub.load(str(repo_dir), entry, source="local", pretrained=False, **kwargs)
    except TypeError as e:
        raise EncoderSpecError(f"'{spec}': the hub entry '{entry}' rejects the options "
                               f"{sorted(kwargs)}: {e}") from None
    if opts.get("ckpt"):
        load_into(model, opts["ckpt"], opts.get("remap"))
    elif not flag(opts, "random"):
        raise EncoderSpecError(f"'{spec}': pass ?ckpt=PATH (the backbone's .pth) or ?random=1")
    return HubEncoder(model, spec, image_size=int(opts.get("img_size", 224)))
