"""A small stand-in for the DINOv2 torch.hub backbone (facebookresearch/dinov2, ``dinov2/layers`` and
``dinov2/models/vision_transformer.py``), written for these tests so they need neither the repo nor a
download. It keeps what the dual-channel wrapper relies on: class names ``Attention`` / ``MemEffAttention``
with ``qkv`` + ``proj`` Linears and an ``attn_bias`` keyword, ``Block.attn``, and the chunked layout
(``blocks.<chunk>.<global index>.attn`` with ``nn.Identity`` padding) used when ``block_chunks > 0``.
The real repo is exercised too when ``SPATIALBOOST_DINOV2_REPO`` points to a local clone."""
from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)
        if attn_bias is not None:
            attn = attn + attn_bias
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class MemEffAttention(Attention):
    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x, attn_bias=attn_bias)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_class=MemEffAttention):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn_class(dim, num_heads=num_heads, qkv_bias=True)
        self.ls1 = LayerScale(dim, 1.0)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, 1.0)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BlockChunk(nn.ModuleList):
    def forward(self, x):
        for b in self:
            x = b(x)
        return x


class DinoVisionTransformer(nn.Module):
    def __init__(self, img_size: int = 28, patch_size: int = 14, embed_dim: int = 32, depth: int = 4,
                 num_heads: int = 2, block_chunks: int = 0, attn_class=MemEffAttention):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (img_size // patch_size) ** 2, embed_dim) * 0.02)
        blocks = [Block(embed_dim, num_heads, attn_class) for _ in range(depth)]
        if block_chunks > 0:
            size = depth // block_chunks
            self.blocks = nn.ModuleList([BlockChunk([nn.Identity()] * i + blocks[i:i + size])
                                         for i in range(0, depth, size)])
        else:
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim)

    def forward_features(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.forward_features(x)[:, 0]
