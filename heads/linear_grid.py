"""DINOv2-style linear evaluation: many linear heads trained at once on the same frozen features.

Heads that read the same input are stacked into one weight tensor [H, D, C]; each head keeps its own
learning rate by scaling its slice of the gradient. With SGD momentum and no weight decay this is
exactly equivalent to one param group per head (momentum is linear in the gradient), which a test checks.
The loss is the sum of the heads' cross-entropies, as in DINOv2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

from heads.loop import endless

DINOV2_LRS = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


@dataclass(frozen=True)
class InputConfig:
    """Which features a head reads: CLS of the last ``n_blocks`` (+ the last block's mean patch token)."""
    n_blocks: int
    avgpool: bool

    @property
    def name(self) -> str:
        return f"b{self.n_blocks}{'.avg' if self.avgpool else ''}"

    def build(self, feats: dict[str, torch.Tensor], blocks: list[int]) -> torch.Tensor:
        """feats: ``cls.<blk>`` / ``avgpool.<blk>`` tensors [B, D]; blocks: the encoder's blocks, ascending."""
        use = blocks[-self.n_blocks:]
        parts = [feats[f"cls.{b}"] for b in use]
        if self.avgpool:
            parts.append(feats[f"avgpool.{blocks[-1]}"])
        return torch.cat(parts, dim=-1)


class StackedLinear(nn.Module):
    """H independent linear classifiers over the same input: [B, D] -> [H, B, C]."""

    def __init__(self, n_heads: int, in_dim: int, n_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_heads, in_dim, n_classes).normal_(0, 0.01, generator=generator))
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,hdc->hbc", x, self.weight) + self.bias


class LinearGrid(nn.Module):
    """All (input config x lr) heads. ``head_names()[k]`` labels row k of ``logits``."""

    def __init__(self, inputs: list[InputConfig], lrs: Iterable[float], dims: dict[InputConfig, int],
                 n_classes: int, generator: torch.Generator | None = None):
        super().__init__()
        self.inputs = list(inputs)
        self.lrs = tuple(float(x) for x in lrs)
        self.heads = nn.ModuleList(StackedLinear(len(self.lrs), dims[c], n_classes, generator) for c in self.inputs)

    def head_names(self) -> list[str]:
        return [f"lin.{c.name}.lr{lr:g}" for c in self.inputs for lr in self.lrs]

    def forward(self, feats: dict[str, torch.Tensor], blocks: list[int]) -> torch.Tensor:
        """-> logits [n_heads_total, B, C]."""
        return torch.cat([head(c.build(feats, blocks)) for c, head in zip(self.inputs, self.heads)], dim=0)

    def scale_grads(self, base_lr_scale: float) -> None:
        """Give each head its own learning rate: grad of head h *= lr_h * scale."""
        lr = torch.tensor(self.lrs) * base_lr_scale
        for head in self.heads:
            if head.weight.grad is not None:
                head.weight.grad.mul_(lr.view(-1, 1, 1).to(head.weight.grad))
                head.bias.grad.mul_(lr.view(-1, 1, 1).to(head.bias.grad))


def cosine_factor(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def train_linear_grid(grid: LinearGrid, batches: Callable[[], Iterator[tuple[dict, torch.Tensor]]],
                      blocks: list[int], total_iters: int, batch_size: int, world_size: int = 1,
                      on_step: Callable[[int, float], None] | None = None) -> None:
    """SGD momentum 0.9, wd 0, cosine over ``total_iters``; lr scaled by batch*world/256 (DINOv2).

    ``batches()`` yields (features dict, labels) and is called again whenever it runs dry (epochs)."""
    opt = torch.optim.SGD(grid.parameters(), lr=1.0, momentum=0.9, weight_decay=0.0)
    scale = batch_size * world_size / 256.0
    it = endless(batches)
    grid.train()
    for step in range(total_iters):
        feats, labels = next(it)
        logits = grid(feats, blocks)
        loss = sum(F.cross_entropy(l, labels) for l in logits)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        grid.scale_grads(scale)
        for g in opt.param_groups:
            g["lr"] = cosine_factor(step, total_iters)
        opt.step()
        if on_step is not None:
            on_step(step, float(loss.detach()) / logits.shape[0])
    grid.eval()


@torch.no_grad()
def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """logits [H, B, C] -> {k: bool [H, B]}: is the label among the top k (per sample, so runs can be paired)."""
    out = {}
    maxk = min(max(ks), logits.shape[-1])
    pred = logits.topk(maxk, dim=-1).indices          # [H, B, maxk]
    hit = pred == labels.view(1, -1, 1)
    for k in ks:
        out[k] = hit[..., :min(k, maxk)].any(-1)
    return out


@torch.no_grad()
def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[int, torch.Tensor]:
    """logits [H, B, C] -> {k: correct counts [H]}."""
    return {k: h.sum(-1) for k, h in topk_hits(logits, labels, ks).items()}
