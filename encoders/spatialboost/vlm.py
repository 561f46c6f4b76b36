"""The SpatialBoost vision-language model (paper §3.1): encoder f_V -> projector g_P -> LLM f_L.

- f_V: any harness :class:`~encoders.base.Encoder`. Visual tokens of a view = the patch tokens (prefix/CLS and
  register tokens dropped, final norm applied, as the Encoder contract returns them) of block
  ``feature_layer``. Default ``-1`` (the last block), so every wrapped attention layer of the encoder receives
  gradient in stage 3 and the boosted encoder is trained over its whole depth. LLaVA-1.5 uses the penultimate
  layer (``-2``); pass ``feature_layer=-2`` for that (the dual-channel wrap then covers blocks 0..n-2 only, see
  ``BoostConfig.dual_layers='auto'``).
- g_P: 2-layer MLP with GELU (LLaVA-1.5 ``mlp2x_gelu``): Linear(D, H) -> GELU -> Linear(H, H).
- f_L: a Hugging Face causal LM; the ``<image>`` token positions (already expanded to ``tokens_per_image`` per
  view by the data pipeline) are replaced by the projected visual tokens of the views, in order.

Loss: token-level cross entropy on the answer tokens only (labels != -100), next-token shifted. ``forward``
returns the *sum* over answer tokens and their count, so that the trainer normalises over the whole
(accumulated) batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders.base import Encoder

from .data import IGNORE, Batch
from .lm import LanguageModel


class Projector(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def backbone_of(encoder: Encoder) -> nn.Module:
    """The wrapped backbone inside a harness adapter (``.model`` for every adapter of encoders/adapters/)."""
    return getattr(encoder, "model", encoder)


class SpatialVLM(nn.Module):
    def __init__(self, encoder: Encoder, lm: LanguageModel, feature_layer: int = -1, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.lm = lm.model
        self.tokenizer = lm.tokenizer
        self.image_token_id = lm.image_token_id
        self.feature_layer = encoder.resolve_layers([feature_layer])[0]
        state = torch.random.get_rng_state()
        torch.manual_seed(seed + 7919)
        self.projector = Projector(encoder.info.embed_dim, lm.hidden_size)
        torch.random.set_rng_state(state)

    def tokens_per_image(self, image_size: int | None = None) -> int:
        s = image_size or self.encoder.info.image_size[0]
        return (s // self.encoder.info.patch_size) ** 2

    def visual_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> projected visual tokens [N, h*w, H]."""
        out = self.encoder(pixel_values, layers=(self.feature_layer,))
        patches = out.layers[self.feature_layer].patches
        # a bf16-stored frozen encoder (precision=bf16 training) feeds the fp32 projector outside autocast too
        return self.projector(patches.flatten(1, 2).to(self.projector[0].weight.dtype))

    def embed(self, batch: Batch) -> torch.Tensor:
        emb_layer = self.lm.get_input_embeddings()
        emb = emb_layer(batch.input_ids)
        mask = batch.input_ids == self.image_token_id
        n_slots = int(mask.sum())
        if batch.pixel_values.shape[0] == 0:
            if n_slots:
                raise ValueError(f"batch has {n_slots} image tokens but no images")
            return emb
        vis = self.visual_tokens(batch.pixel_values)
        if vis.shape[0] * vis.shape[1] != n_slots:
            raise ValueError(f"batch has {n_slots} image-token slots but {vis.shape[0]} view(s) x {vis.shape[1]} "
                             f"visual tokens; image size / tokens_per_image disagree with the data")
        return emb.masked_scatter(mask.unsqueeze(-1), vis.to(emb.dtype))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """(sum of answer-token cross entropy, number of answer tokens)."""
        emb = self.embed(batch)
        logits = self.lm(inputs_embeds=emb, attention_mask=batch.attention_mask, use_cache=False).logits
        shift_logits = logits[:, :-1].float()
        shift_labels = batch.labels[:, 1:]
        loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                               ignore_index=IGNORE, reduction="sum")
        return loss, int((shift_labels != IGNORE).sum())
