"""``hf:LOCAL_DIR``: Hugging Face vision models (Dinov2 (+registers), DINOv3-ViT, CLIP, SigLIP, SigLIP2 NaFlex)
from a local folder, block outputs read with forward hooks. Vision-language folders (InternVL, LLaVA,
Qwen2-VL) are handed to :mod:`encoders.adapters.hf_vlm`, which gives their vision tower."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from encoders.base import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderInfo, LayerFeatures,
                           capture_blocks, tokens_to_map)

from .common import EncoderSpecError, flag, rebuild_from_spec


class HFVisionEncoder(Encoder):
    """Hugging Face vision models (Dinov2, DINOv3-ViT, CLIP / SigLIP vision towers) via hidden states.

    Block outputs are read with forward hooks (= hidden state ``i + 1``); the final norm is the model's
    ``layernorm`` (DINOv2/DINOv3) or ``post_layernorm`` (CLIP/SigLIP towers)."""

    def __init__(self, model: nn.Module, spec: str, image_size: int | None = None,
                 mean=None, std=None):
        super().__init__()
        self.model = model.eval()
        cfg = model.config
        mt = cfg.model_type
        if mt in ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model"):
            self.body = getattr(model, "vision_model", model)  # transformers 5 flattened the tower
            self.norm = self.body.post_layernorm
        else:
            # DINOv2 ``layernorm``, DINOv3 ``norm``; towers without a final norm (InternViT) get none
            norm = getattr(model, "layernorm", None) or getattr(model, "norm", None)
            self.body, self.norm = model, norm if isinstance(norm, nn.Module) else nn.Identity()
        registers = int(getattr(cfg, "num_register_tokens", 0) or 0)
        prefix = 0 if mt.startswith("siglip") else 1 + registers
        default_mean, default_std = {
            "clip_vision_model": (CLIP_MEAN, CLIP_STD),
            "siglip_vision_model": ((0.5,) * 3, (0.5,) * 3),
            "siglip2_vision_model": ((0.5,) * 3, (0.5,) * 3)}.get(mt, (IMAGENET_MEAN, IMAGENET_STD))
        def first(v):   # InternVL writes [448, 448] / [14, 14]
            return int(v[0] if isinstance(v, (list, tuple)) else v)
        if getattr(cfg, "image_size", None) is None and getattr(cfg, "num_patches", None):
            size = image_size or int(round(cfg.num_patches ** 0.5)) * first(cfg.patch_size)  # SigLIP2 NaFlex
        else:
            size = image_size or first(cfg.image_size)
        if mt == "dinov2" and size == 518 and image_size is None:
            size = 224  # DINOv2's config keeps the 518 position table; its eval resolution is 224
        self.info = EncoderInfo(
            spec=spec, embed_dim=int(cfg.hidden_size), num_layers=int(cfg.num_hidden_layers),
            patch_size=first(cfg.patch_size), num_prefix_tokens=prefix, image_size=(size, size),
            mean=tuple(mean or default_mean), std=tuple(std or default_std), family=f"hf-{mt}")
        self._interp = mt in ("clip_vision_model", "siglip_vision_model")

    def __reduce__(self):
        if type(self.model).__module__.startswith("transformers_modules"):
            # remote code lives in a dynamic module pickle cannot import: rebuild from the spec
            return rebuild_from_spec, (self.info.spec, self.state_dict())
        return super().__reduce__()

    def _blocks(self) -> nn.ModuleList:
        """The transformer blocks: the ModuleList as long as the model is deep."""
        for mod in self.body.modules():
            if isinstance(mod, nn.ModuleList) and len(mod) == self.info.num_layers:
                return mod
        raise TypeError(f"'{self.info.spec}': cannot find the {self.info.num_layers} transformer blocks")

    def _features(self, images, block_ids):
        # Block outputs are captured with our own forward hooks rather than output_hidden_states:
        # transformers 5 records hidden states through hooks that do not survive pickling (worker
        # processes), hooks keep only the blocks asked for, and the forward stops after the deepest one.
        kw = {"interpolate_pos_encoding": True} if self._interp else {}
        captured = capture_blocks(self._blocks(), block_ids, lambda: self.body(**self._inputs(images), **kw))
        h, w = images.shape[-2] // self.info.patch_size, images.shape[-1] // self.info.patch_size
        return {i: tokens_to_map(captured[i], self.info.num_prefix_tokens, (h, w)) for i in block_ids}

    def _inputs(self, images: torch.Tensor) -> dict:
        if self.info.family != "hf-siglip2_vision_model":
            return {"pixel_values": images}
        # SigLIP2 NaFlex: row-major patches flattened (patch_h, patch_w, channel), as its image processor
        # writes them, every patch valid, and the grid of each image
        b, c, h, w = images.shape
        p = self.info.patch_size
        x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), -1)
        return {"pixel_values": x, "pixel_attention_mask": torch.ones(x.shape[:2], dtype=torch.long, device=x.device),
                "spatial_shapes": torch.tensor([[h // p, w // p]] * b, device=x.device)}

    def _norm_patches(self, x):
        return self.norm(x)

    def _pool(self, normed_last):
        head = getattr(self.body, "head", None) if getattr(self.body, "use_head", False) else None
        if head is None or self.info.num_prefix_tokens:
            return normed_last
        # SigLIP: the attention-pooling (MAP) head over the normed last tokens = its pooler_output
        return LayerFeatures(cls=head(normed_last.patches.flatten(1, 2)), patches=normed_last.patches)


def read_preprocessor(path: Path) -> dict:
    f = path / "preprocessor_config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def _remote_code_check(path: Path, raw: dict, opts: dict, spec: str) -> bool:
    """True when the folder's model needs its own code (config ``auto_map``) and the user allowed it.

    Running a folder's code is running a program: refused unless ``?trust_remote_code=1`` and every
    module it names is a file inside the folder (an ``other/repo--module.Class`` reference would be
    fetched from the Hub and is refused outright)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    auto_map = raw.get("auto_map") or {}
    if not auto_map or raw.get("model_type") in CONFIG_MAPPING_NAMES:
        return False
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, (list, tuple)) else [v]) if r]
    remote = [r for r in refs if "--" in r]
    files = sorted({r.rsplit(".", 1)[0] + ".py" for r in refs if "--" not in r})
    missing = [f for f in files if not (path / f).is_file()]
    if remote or missing:
        raise EncoderSpecError(
            f"'{spec}': model type '{raw.get('model_type')}' needs code that is not in '{path}' "
            f"({', '.join(remote + missing)}); code is never downloaded. Put the modeling files beside "
            f"config.json (as the Hub repo has them) or use a transformers-native checkpoint.")
    if not flag(opts, "trust_remote_code"):
        raise EncoderSpecError(
            f"'{spec}': model type '{raw.get('model_type')}' is not built into transformers; loading it runs "
            f"the Python code in '{path}' ({', '.join(files)}). Pass ?trust_remote_code=1 if you trust that "
            f"folder.")
    return True


def build_hf(target: str, opts: dict, spec: str, workspace=None) -> Encoder:
    from transformers import AutoConfig, AutoModel, CLIPVisionModel, SiglipVisionModel
    path = Path(target).expanduser()
    if not path.is_dir():
        raise EncoderSpecError(
            f"'{spec}': '{target}' is not a local folder. Weights are never downloaded at run time: "
            f"fetch them once (e.g. `huggingface-cli download {target} --local-dir DIR`) and pass hf:DIR.")
    if not (path / "config.json").is_file():
        raise EncoderSpecError(f"'{spec}': folder '{path}' has no config.json (save the model with "
                               "save_pretrained, which writes config.json beside the weights)")
    try:
        raw = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise EncoderSpecError(f"'{spec}': '{path / 'config.json'}' is not valid JSON: {e}") from None
    trust = _remote_code_check(path, raw if isinstance(raw, dict) else {}, opts, spec)
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
    except (OSError, ValueError) as e:
        raise EncoderSpecError(f"'{spec}': '{path / 'config.json'}' is not a usable model config: "
                               f"{str(e).splitlines()[0]}") from None
    from .hf_vlm import VLM_TOWERS, build_vlm_tower
    if cfg.model_type in VLM_TOWERS:
        return build_vlm_tower(path, cfg, opts, spec)
    from transformers import Siglip2VisionModel
    loader = {"clip": CLIPVisionModel, "siglip": SiglipVisionModel,   # full dual-encoder folders: vision tower
              "siglip2": Siglip2VisionModel}.get(cfg.model_type, AutoModel)
    try:
        model = loader.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
    except pickle.UnpicklingError as e:   # torch.load(weights_only=True) refused code in the checkpoint
        raise EncoderSpecError(f"'{spec}': the weights in '{path}' hold Python objects that could run code "
                               f"and were refused ({str(e).splitlines()[-1][:200]}); use safetensors") from None
    except (OSError, ValueError) as e:
        raise EncoderSpecError(f"'{spec}': cannot load the weights in '{path}': "
                               f"{str(e).splitlines()[0]}") from None
    pre = read_preprocessor(path)
    size = opts.get("img_size")
    return HFVisionEncoder(model, spec, image_size=int(size) if size else None,
                           mean=pre.get("image_mean"), std=pre.get("image_std"))
