"""DINOv2-style linear evaluation: many linear heads trained at once on the same frozen features.

The classification piece of the head grid (``heads/grid.py``): heads that read the same input are stacked
into one weight tensor [H, D, C]; each head keeps its own learning rate by scaling its slice of the
gradient (``GridSGD``). The loss is the sum of the heads' cross-entropies, as in DINOv2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from heads.grid import GridSGD, StackedGrid, endless, train_grid
from heads.grid import StackedLinear, cosine_factor  # noqa: F401  (re-exported: older import path)

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


class LinearGrid(StackedGrid):
    """All (input config x lr) classification heads. ``head_names()[k]`` labels row k of ``logits``."""

    def __init__(self, inputs: list[InputConfig], lrs: Iterable[float], dims: dict[InputConfig, int],
                 n_classes: int, generator: torch.Generator | None = None):
        inputs = list(inputs)
        super().__init__(inputs, lrs, [dims[c] for c in inputs], n_classes, generator)

    def forward(self, feats: dict[str, torch.Tensor], blocks: list[int]) -> torch.Tensor:
        """-> logits [n_heads_total, B, C]."""
        return torch.cat([head(c.build(feats, blocks)) for c, head in zip(self.inputs, self.heads)], dim=0)

    def train_outputs(self, inputs, chunk=None):
        """One group of all heads: their cross-entropies are summed and back-propagated at once (DINOv2)."""
        feats, blocks = inputs
        yield 0, self(feats, blocks)


def cross_entropies(logits: torch.Tensor, labels: torch.Tensor, step: int = 0) -> torch.Tensor:
    """[H, B, C] logits -> [H] per-head cross-entropy (the grid's loss is their sum, as in DINOv2)."""
    return torch.stack([F.cross_entropy(l, labels) for l in logits])


def train_linear_grid(grid: LinearGrid, batches: Callable[[], Iterator[tuple[dict, torch.Tensor]]],
                      blocks: list[int], total_iters: int, batch_size: int, world_size: int = 1,
                      on_step: Callable[[int, float], None] | None = None) -> None:
    """SGD momentum 0.9, wd 0, cosine over ``total_iters``; lr scaled by batch*world/256 (DINOv2).

    ``batches()`` yields (features dict, labels) and is called again whenever it runs dry (epochs).
    ``on_step(step, mean loss over heads)``."""
    it = (((feats, blocks), y) for feats, y in endless(batches))
    def report(step, losses):    # python sum in head order: the float the pre-grid loop logged
        on_step(step, float(sum(losses.unbind())) / grid.n_heads)
    train_grid(grid, it, total_iters, cross_entropies, GridSGD(grid, batch_size * world_size / 256.0, total_iters),
               on_step=report if on_step is not None else None)


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
