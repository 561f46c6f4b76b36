"""Adapters that turn each backbone family into an ``Encoder``.

Every adapter reads weights from local files only. A spec that would need a download fails with a
message that says what to pass instead.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from encoders.base import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Encoder, EncoderInfo,
                           LayerFeatures, tokens_to_map)
from encoders.checkpoint import CheckpointError, load_into
from harness.errors import UserError


class EncoderSpecError(UserError, ValueError):
    pass


def _literal(v: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, else the string."""
    import yaml
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def _flag(opts: dict, key: str) -> bool:
    return str(opts.get(key, "0")).lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------- timm
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
            intermediates_only=True)
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
    kwargs = {k: _literal(v) for k, v in opts.items() if k not in ("ckpt", "remap", "random")}
    kwargs.setdefault("dynamic_img_size", True)
    ckpt = opts.get("ckpt")
    if not ckpt and not _flag(opts, "random"):
        raise EncoderSpecError(
            f"'{spec}': weights are never downloaded at run time. Pass ?ckpt=PATH (safetensors or .pth "
            f"state dict for timm '{target}'), or ?random=1 for a randomly initialised model.")
    try:
        model = timm.create_model(target, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:   # an option that is not a keyword of the model's constructor
        import re
        bad = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        what = f"option '{bad.group(1)}'" if bad else f"one of the options {sorted(kwargs)}"
        raise EncoderSpecError(
            f"'{spec}': {what} is not an argument of timm model '{target}' (every option except ckpt, remap "
            f"and random is passed to timm.create_model): {e}") from None
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


# ---------------------------------------------------------------------------------- Hugging Face
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
            return _rebuild_hub, (self.info.spec, self.state_dict())
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
        # processes), and hooks keep only the blocks asked for.
        kw = {"interpolate_pos_encoding": True} if self._interp else {}
        captured: dict[int, torch.Tensor] = {}
        blocks = self._blocks()
        handles = [blocks[i].register_forward_hook(
            lambda _m, _a, out, i=i: captured.__setitem__(i, out[0] if isinstance(out, (tuple, list)) else out))
            for i in block_ids]
        try:
            out = self.body(**self._inputs(images), **kw)
        finally:
            for h in handles:
                h.remove()
        del out
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


def _read_preprocessor(path: Path) -> dict:
    f = path / "preprocessor_config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


# vision-language model folders: the vision tower's attribute (= its key prefix in the checkpoint)
VLM_TOWERS = {"internvl": "vision_tower", "llava": "vision_tower", "qwen2_vl": "visual", "qwen2_5_vl": "visual"}


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
    if not _flag(opts, "trust_remote_code"):
        raise EncoderSpecError(
            f"'{spec}': model type '{raw.get('model_type')}' is not built into transformers; loading it runs "
            f"the Python code in '{path}' ({', '.join(files)}). Pass ?trust_remote_code=1 if you trust that "
            f"folder.")
    return True


def _read_tower_state(path: Path, prefixes: tuple[str, ...], spec: str) -> dict[str, torch.Tensor]:
    """The tensors of one sub-model (a VLM's vision tower) from the folder's shards, prefix removed; only
    those tensors are read (safetensors), so the language model never enters memory."""
    from encoders.checkpoint import read_state_dict
    shards = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not shards:
        raise EncoderSpecError(f"'{spec}': '{path}' holds no *.safetensors or pytorch_model*.bin weights")
    out: dict[str, torch.Tensor] = {}
    for shard in shards:
        if shard.suffix == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(shard), "pt") as f:
                for k in f.keys():
                    p = next((p for p in prefixes if k.startswith(p)), None)
                    if p is not None:
                        out[k[len(p):]] = f.get_tensor(k)
        else:
            for k, v in read_state_dict(shard).items():
                p = next((p for p in prefixes if k.startswith(p)), None)
                if p is not None:
                    out[k[len(p):]] = v
    if not out:
        raise EncoderSpecError(f"'{spec}': no tensor in '{path}' starts with {' or '.join(prefixes)}")
    return out


def _build_vlm_tower(path: Path, cfg, opts: dict, spec: str) -> Encoder:
    from transformers import AutoModel
    attr = VLM_TOWERS[cfg.model_type]
    if cfg.model_type == "qwen2_vl":        # (towers that AutoModel does not map)
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel as cls
    elif cfg.model_type == "qwen2_5_vl":
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel as cls
    else:
        cls = None
    tower = (cls._from_config(cfg.vision_config) if cls else AutoModel.from_config(cfg.vision_config)).eval()
    sd = _read_tower_state(path, (f"model.{attr}.", f"{attr}."), spec)
    own = tower.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    shape = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or shape:
        raise EncoderSpecError(f"'{spec}': the {attr} weights in '{path}' do not fit {type(tower).__name__}: "
                               f"missing {missing[:5]}, unexpected {unexpected[:5]}, mis-shaped {shape[:5]}")
    tower.load_state_dict(sd, strict=True)
    tower.float()
    pre = _read_preprocessor(path)
    size = opts.get("img_size")
    if cfg.model_type in ("qwen2_vl", "qwen2_5_vl"):
        return QwenVisionEncoder(tower, spec, image_size=int(size) if size else 448,
                                 mean=pre.get("image_mean") or CLIP_MEAN, std=pre.get("image_std") or CLIP_STD)
    return HFVisionEncoder(tower, spec, image_size=int(size) if size else None,
                           mean=pre.get("image_mean"), std=pre.get("image_std"))


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
    if cfg.model_type in VLM_TOWERS:
        return _build_vlm_tower(path, cfg, opts, spec)
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
    pre = _read_preprocessor(path)
    size = opts.get("img_size")
    return HFVisionEncoder(model, spec, image_size=int(size) if size else None,
                           mean=pre.get("image_mean"), std=pre.get("image_std"))


class QwenVisionEncoder(Encoder):
    """Qwen2-VL / Qwen2.5-VL vision towers. They take flattened patches (each image repeated over the
    2-frame temporal patch, 2x2 patch groups contiguous, as the Qwen2-VL image processor lays them out)
    plus ``grid_thw``; Qwen2.5-VL also reorders tokens into attention windows. Block outputs are put
    back on the h x w patch grid; the final norm is the patch merger's ``ln_q`` (what the language
    model's projector reads). No class token: ``cls`` is the mean patch. H and W must be multiples of
    patch_size x spatial_merge_size (28)."""

    def __init__(self, visual: nn.Module, spec: str, image_size: int = 448, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.model = visual.eval()
        cfg = visual.config
        self._merge, self._t = int(cfg.spatial_merge_size), int(cfg.temporal_patch_size)
        self.info = EncoderInfo(
            spec=spec, embed_dim=int(visual.blocks[0].norm1.weight.shape[0]), num_layers=len(visual.blocks),
            patch_size=int(cfg.patch_size), num_prefix_tokens=0, image_size=(image_size, image_size),
            mean=tuple(mean), std=tuple(std), family=f"hf-{cfg.model_type}")

    def patchify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = images.shape
        p, m, t = self.info.patch_size, self._merge, self._t
        if h % (p * m) or w % (p * m):
            raise ValueError(f"encoder '{self.info.spec}' needs H and W multiples of {p * m}, got {h}x{w}")
        gh, gw = h // p, w // p
        x = images.unsqueeze(1).expand(b, t, c, h, w).reshape(b, 1, t, c, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(b * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]] * b, device=images.device)
        return x, grid

    def _window_index(self, grid):
        if not hasattr(self.model, "fullatt_block_indexes"):
            return None                                         # Qwen2-VL: no windows
        try:
            from transformers.vision_utils import get_vision_window_index
        except ImportError:   # transformers releases before the helper moved out of the model
            return self.model.get_window_index(grid)[0]
        cfg = self.model.config
        return get_vision_window_index(grid, spatial_merge_size=self._merge, window_size=cfg.window_size,
                                       patch_size=cfg.patch_size)[0]

    def _features(self, images, block_ids):
        x, grid = self.patchify(images)
        captured: dict[int, torch.Tensor] = {}
        handles = [self.model.blocks[i].register_forward_hook(
            lambda _m, _a, out, i=i: captured.__setitem__(i, out[0] if isinstance(out, (tuple, list)) else out))
            for i in block_ids]
        try:
            self.model(x.to(next(self.model.parameters()).dtype), grid_thw=grid)
        finally:
            for h in handles:
                h.remove()
        order = self._window_index(grid)
        b, m = images.shape[0], self._merge
        gh, gw = images.shape[-2] // self.info.patch_size, images.shape[-1] // self.info.patch_size
        feats = {}
        for i in block_ids:
            tok = captured[i]
            if order is not None:   # back from attention-window order to the processor's order
                tok = tok.reshape(-1, m * m, tok.shape[-1])[torch.argsort(order)].reshape(-1, tok.shape[-1])
            grid_map = tok.reshape(b, gh // m, gw // m, m, m, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, gh, gw, -1)
            feats[i] = LayerFeatures(cls=grid_map.mean((1, 2)), patches=grid_map)
        return feats

    def _norm_patches(self, x):
        return self.model.merger.ln_q(x)


# ------------------------------------------------------------------------------------- open_clip
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
                                               output_extra_tokens=True)
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
    if not ckpt and not _flag(opts, "random"):
        raise EncoderSpecError(f"'{spec}': pass ?ckpt=PATH (open_clip state dict) or ?random=1; "
                               "weights are never downloaded at run time.")
    try:
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


# ------------------------------------------------------------------------------------- torch.hub
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
        return _rebuild_hub, (self.info.spec, self.state_dict())

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


def _rebuild_hub(spec: str, state: dict) -> "HubEncoder":
    from encoders.spec import build_encoder
    enc = build_encoder(spec)
    enc.load_state_dict(state)
    return enc


def build_torchhub(target: str, opts: dict, spec: str, workspace=None) -> Encoder:
    repo, _, entry = target.rpartition(":")
    if not repo or not entry:
        raise EncoderSpecError(f"'{spec}': expected torchhub:REPO_DIR:ENTRY (e.g. torchhub:~/dinov2:dinov2_vits14)")
    repo_dir = Path(repo).expanduser()
    if not (repo_dir / "hubconf.py").is_file():
        raise EncoderSpecError(f"'{spec}': '{repo_dir}' is not a local torch.hub repo (no hubconf.py); "
                               "clone it once and pass its folder")
    # any other option is a keyword of the hub entry (the DINOv2/DINOv3 entries pass them to the model)
    kwargs = {k: _literal(v) for k, v in opts.items() if k not in ("ckpt", "remap", "random", "img_size")}
    try:
        model = torch.hub.load(str(repo_dir), entry, source="local", pretrained=False, **kwargs)
    except TypeError as e:
        raise EncoderSpecError(f"'{spec}': the hub entry '{entry}' rejects the options "
                               f"{sorted(kwargs)}: {e}") from None
    if opts.get("ckpt"):
        load_into(model, opts["ckpt"], opts.get("remap"))
    elif not _flag(opts, "random"):
        raise EncoderSpecError(f"'{spec}': pass ?ckpt=PATH (the backbone's .pth) or ?random=1")
    return HubEncoder(model, spec, image_size=int(opts.get("img_size", 224)))
