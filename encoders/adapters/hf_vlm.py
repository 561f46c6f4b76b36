"""The vision tower of a vision-language model folder (``hf:DIR`` of InternVL, LLaVA, Qwen2-VL, Qwen2.5-VL):
only the tower's tensors are read; Qwen towers get their own adapter (flattened patches, ``grid_thw``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from encoders.base import CLIP_MEAN, CLIP_STD, Encoder, EncoderInfo, LayerFeatures, capture_blocks

from .common import EncoderSpecError
from .hf import HFVisionEncoder, read_preprocessor

# vision-language model folders: the vision tower's attribute (= its key prefix in the checkpoint)
VLM_TOWERS = {"internvl": "vision_tower", "llava": "vision_tower", "qwen2_vl": "visual", "qwen2_5_vl": "visual"}


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


def build_vlm_tower(path: Path, cfg, opts: dict, spec: str) -> Encoder:
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
    pre = read_preprocessor(path)
    size = opts.get("img_size")
    if cfg.model_type in ("qwen2_vl", "qwen2_5_vl"):
        return QwenVisionEncoder(tower, spec, image_size=int(size) if size else 448,
                                 mean=pre.get("image_mean") or CLIP_MEAN, std=pre.get("image_std") or CLIP_STD)
    return HFVisionEncoder(tower, spec, image_size=int(size) if size else None,
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
        captured = capture_blocks(self.model.blocks, block_ids,
                                  lambda: self.model(x.to(next(self.model.parameters()).dtype), grid_thw=grid))
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
