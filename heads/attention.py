"""The pre-norm transformer layer the language heads share: self-attention over the queries (objects,
learned queries), cross-attention into a context (text tokens, point features), then a GELU FFN."""
from __future__ import annotations

from torch import nn


class SelfCrossLayer(nn.Module):
    """``forward(x [B,M,d], ctx [B,T,d], x_pad=None, ctx_pad=None)``; ``*_pad`` = True at padding.
    ``residual_dropout`` also drops each residual branch (the grounding head; the Q-Former does not)."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float, residual_dropout: bool = True):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout if residual_dropout else 0.0)

    def forward(self, x, ctx, x_pad=None, ctx_pad=None):
        h = self.n1(x)
        x = x + self.drop(self.self_attn(h, h, h, key_padding_mask=x_pad, need_weights=False)[0])
        h = self.n2(x)
        x = x + self.drop(self.cross_attn(h, ctx, ctx, key_padding_mask=ctx_pad, need_weights=False)[0])
        return x + self.drop(self.ffn(self.n3(x)))
