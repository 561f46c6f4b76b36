"""Attention fusion head for 3D visual grounding (paper App. A.4, after Multi3DRefer): object features
(mean of lifted point features in each ground-truth box) fused with the description's token features by a
stack of transformer layers — object self-attention, cross-attention from objects to text tokens, FFN — and
a confidence per object; trained with cross-entropy over the scene's objects."""
from __future__ import annotations

from torch import nn

from heads.attention import SelfCrossLayer


class GroundingHead(nn.Module):
    """``forward(obj [B,M,D], obj_mask [B,M] bool (True = real), geo [B,M,G], txt [B,T,E], txt_mask [B,T])``
    -> logits [B, M] (padding objects at -inf). ``geo`` = box geometry (centre, size) or width 0."""

    def __init__(self, obj_dim: int, text_dim: int, geo_dim: int = 6, d: int = 256, layers: int = 4,
                 heads: int = 8, ffn: int = 512, dropout: float = 0.1):
        super().__init__()
        self.obj_in = nn.Sequential(nn.LayerNorm(obj_dim), nn.Linear(obj_dim, d))
        self.geo_in = nn.Linear(geo_dim, d) if geo_dim else None
        self.txt_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d))
        self.layers = nn.ModuleList(SelfCrossLayer(d, heads, ffn, dropout) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))

    def forward(self, obj, obj_mask, geo, txt, txt_mask):
        x = self.obj_in(obj)
        if self.geo_in is not None:
            x = x + self.geo_in(geo)
        t = self.txt_in(txt)
        for layer in self.layers:
            x = layer(x, t, ~obj_mask, ~txt_mask)
        logits = self.out(x).squeeze(-1)
        return logits.masked_fill(~obj_mask, float("-inf"))
