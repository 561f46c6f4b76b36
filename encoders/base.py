"""The encoder contract every suite consumes, whatever the backbone family.

Modelled on timm's ``forward_intermediates``: one call returns the pooled/CLS embedding, the final patch
map, and any requested intermediate blocks. ``norm=True`` (the default) applies the model's final norm to
each requested block, as DINOv2's ``get_intermediate_layers(norm=True)`` and timm's ``norm=True`` do
(classification, segmentation); ``norm=False`` returns the raw residual stream after the block, as
DINOv2's depth heads read it (``get_intermediate_layers(norm=False)``). The final ``cls``/``patches``
are always the normed last block. Layer indices are block indices, negative from the end (-1 = last).

``final=False`` (timm's ``stop_early``) says the caller does not need the final embedding: when the last
block is not requested, the blocks after the deepest requested one are not run and ``cls``/``patches`` are
None. A frozen-feature reader of block 8 of 12 saves a third of the forward (the feature cache and the
MetaWorld rollouts use it).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class EncoderInfo:
    """What travels with the weights (timm's PretrainedCfg): shapes and preprocessing."""
    spec: str
    embed_dim: int
    num_layers: int
    patch_size: int
    num_prefix_tokens: int
    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    family: str = "vit"

    def preprocessing(self) -> dict:
        return {"image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


@dataclass
class LayerFeatures:
    cls: torch.Tensor       # [B, D]: CLS token (or the mean patch token when there is none)
    patches: torch.Tensor   # [B, h, w, D]


@dataclass
class EncoderOutput:
    cls: torch.Tensor | None                # [B, D] final pooled / CLS embedding (None: final=False)
    patches: torch.Tensor | None            # [B, h, w, D] final patch map (None: final=False)
    layers: dict[int, LayerFeatures] = field(default_factory=dict)  # keyed by the index asked for


class Encoder(nn.Module):
    """Base class. Subclasses set ``self.info`` and implement

    - ``_features(images, block_ids) -> {block_id: LayerFeatures}``: the RAW output of each block
      (residual stream, before any final norm) for non-negative block ids; blocks after ``max(block_ids)``
      need not run (:func:`capture_blocks` stops there for hook-based adapters);
    - ``_norm_patches(x)`` / ``_norm_cls(x)``: the final norm applied token-wise to patch / class
      tokens (identity by default: encoders without a final norm);
    - optionally ``_pool(normed_last)``: the final embedding when it is not the normed class token
      (SigLIP's attention-pooling head).
    Keeping the norm out of ``_features`` means one pass serves both ``norm`` choices."""

    info: EncoderInfo

    def resolve_layers(self, layers: Sequence[int]) -> list[int]:
        n = self.info.num_layers
        out = []
        for i in layers:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"encoder '{self.info.spec}' has {n} blocks; layer index {i} is out of range "
                                 f"(use 0..{n - 1} or -{n}..-1)")
            out.append(j)
        return out

    def forward(self, images: torch.Tensor, layers: Sequence[int] = (-1,), norm: bool = True,
                final: bool = True) -> EncoderOutput:
        """images: [B,3,H,W], already normalised with ``info.mean/std``; H, W multiples of the patch size.
        ``norm``: apply the final norm to the requested blocks (True) or return them raw (False).
        ``final=False``: the caller does not need the final embedding; when the last block is not requested the
        forward stops after the deepest requested one and the output's ``cls``/``patches`` are None."""
        ids = self.resolve_layers(layers)
        last = self.info.num_layers - 1
        if not final and last not in ids:
            raw = self._features(images, sorted(set(ids)))
            out = {i: self.apply_norm(raw[j]) if norm else raw[j] for i, j in zip(layers, ids)}
            return EncoderOutput(cls=None, patches=None, layers=out)
        raw = self._features(images, sorted(set(ids) | {last}))
        final_lf = self._pool(self.apply_norm(raw[last]))
        if norm:
            out = {i: final_lf if j == last else self.apply_norm(raw[j]) for i, j in zip(layers, ids)}
        else:
            out = {i: raw[j] for i, j in zip(layers, ids)}
        return EncoderOutput(cls=final_lf.cls, patches=final_lf.patches, layers=out)

    def _features(self, images: torch.Tensor, block_ids: list[int]) -> dict[int, LayerFeatures]:
        raise NotImplementedError

    def _norm_patches(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _norm_cls(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm_patches(x)

    def _pool(self, normed_last: LayerFeatures) -> LayerFeatures:
        return normed_last

    def apply_norm(self, lf: LayerFeatures) -> LayerFeatures:
        """The final norm applied to raw block features (token-wise; without class token the ``cls``
        is the mean of the normed patches, as for the raw ones)."""
        patches = self._norm_patches(lf.patches)
        cls = self._norm_cls(lf.cls) if self.info.num_prefix_tokens > 0 else patches.mean((1, 2))
        return LayerFeatures(cls=cls, patches=patches)

    # -- identity -----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 (16 hex) of every parameter and buffer plus the preprocessing; stable across runs."""
        cached = getattr(self, "_fingerprint", None)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
        h.update(json.dumps(self.info.preprocessing(), sort_keys=True).encode())
        self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict:
        n_params = sum(p.numel() for p in self.parameters())
        return {**asdict(self.info), "params": n_params, "fingerprint": self.fingerprint()}


class _StopForward(Exception):
    """Raised by the hook of the deepest requested block to end a forward early (caught right away)."""


def capture_blocks(blocks: nn.ModuleList, block_ids: Sequence[int], run) -> dict[int, torch.Tensor]:
    """Outputs of ``blocks[i]`` for ``i`` in ``block_ids`` while ``run()`` does the model's own forward, read
    with forward hooks (first element of tuple outputs). The forward ends after the deepest requested block:
    the blocks after it, the final norm and any head are not run."""
    captured: dict[int, torch.Tensor] = {}
    deepest = max(block_ids)

    def hook(out, i):
        captured[i] = out[0] if isinstance(out, (tuple, list)) else out
        if i == deepest:
            raise _StopForward

    handles = [blocks[i].register_forward_hook(lambda _m, _a, out, i=i: hook(out, i)) for i in block_ids]
    try:
        run()
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured


def tokens_to_map(tokens: torch.Tensor, num_prefix: int, grid: tuple[int, int]) -> LayerFeatures:
    """[B, prefix + h*w, D] token sequence -> LayerFeatures(cls, patches[B,h,w,D])."""
    b, _, d = tokens.shape
    patches = tokens[:, num_prefix:, :]
    h, w = grid
    if patches.shape[1] != h * w:
        raise ValueError(f"expected {h}x{w}={h * w} patch tokens after {num_prefix} prefix tokens, "
                         f"got {patches.shape[1]}")
    cls = tokens[:, 0] if num_prefix > 0 else patches.mean(1)
    return LayerFeatures(cls=cls, patches=patches.reshape(b, h, w, d))
