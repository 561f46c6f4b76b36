"""One head-grid abstraction: K heads with different hyper-parameters trained on one pass of shared features.

DINOv2's evaluation idea, used by every probe that trains (classification linear, depth linear, depth DPT,
segmentation linear / +ms): features are computed (or read from the cache) once per batch, every head of
the grid reads them, each head has its own learning rate (and the loss of a head depends only on its own
weights), one optimiser step updates all heads, and the head to report is chosen afterwards on held-out
data (:func:`select`). The task-specific parts are small:

- a :class:`HeadGrid` subclass (what one head computes and how heads are grouped for a forward/backward:
  ``train_outputs``), e.g. ``heads/linear_grid.py`` (class logits), ``heads/depth.py`` (binned depth),
  ``heads/segmentation.py`` (BN + 1x1 conv), ``heads/dpt.py`` (one DPT decoder, K = 1);
- a loss ``loss_fn(outputs [k, ...], target, step) -> [k]``;
- an optimiser piece: :class:`GridSGD` (one stacked weight per input, per-head lr by gradient scaling),
  :class:`GridAdamW` (one AdamW param group per head), :class:`OneCycleAdamW` (a single head).

:func:`train_grid` is the one training loop. It keeps the order of operations of the three loops it
replaced (zero grad, per-chunk forward + backward, optimiser step), so their numbers are unchanged.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------- batches
def endless(batches: Callable[[], Iterable[T]]) -> Iterator[T]:
    """Yield from ``batches()`` and call it again whenever it runs dry (one call = one epoch)."""
    while True:
        empty = True
        for item in batches():
            empty = False
            yield item
        if empty:
            raise ValueError("the training data yields no batch (fewer samples than one batch?)")


# --------------------------------------------------------------------------------------------- schedules
def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 to 0 over ``total`` steps (DINOv2 linear classification and depth)."""
    return 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def poly_warmup_lr(base_lr: float, step: int, total: int, warmup_iters: int = 1500,
                   warmup_ratio: float = 1e-6, power: float = 1.0, min_lr: float = 0.0) -> float:
    """mmcv/mmseg ``poly`` policy with linear warm-up (DINOv2 segmentation configs), by iteration.

    poly(t) = (base - min_lr) * (1 - t/total)^power + min_lr over *all* iterations (warm-up included);
    during warm-up (t < W) the lr is poly(t) * (1 - (1 - t/W) * (1 - warmup_ratio)) (mmcv's 'linear').
    """
    t = min(max(step, 0), total)
    lr = (base_lr - min_lr) * (1.0 - t / max(1, total)) ** power + min_lr
    if warmup_iters > 0 and t < warmup_iters:
        lr *= 1.0 - (1.0 - t / warmup_iters) * (1.0 - warmup_ratio)
    return lr


# ------------------------------------------------------------------------------------------------- heads
class HeadGrid(nn.Module):
    """K heads trained together. Subclasses say what the heads compute; :func:`train_grid` trains them.

    ``train_outputs(inputs, chunk)`` yields ``(offset, outputs [k, ...])`` for consecutive groups of heads
    (offset = index of the group's first head), with gradients; each group is back-propagated on its own,
    so only one group's outputs are alive at a time (heads never share trainable weights)."""

    lrs: tuple[float, ...] = ()

    @property
    def n_heads(self) -> int:
        raise NotImplementedError

    def head_names(self) -> list[str]:
        return [f"lr{lr:g}" for lr in self.lrs]

    def train_outputs(self, inputs, chunk: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        raise NotImplementedError


class StackedLinear(nn.Module):
    """K independent linear maps over the same input, one weight tensor [K, D, C] (init N(0, 0.01), bias 0).

    ``[B, D]`` -> ``[K, B, C]`` (einsum, the classification grid's arithmetic); ``[B, ..., D]`` (patch maps)
    -> ``[K, B, ..., C]`` as one ``[1, N, D] @ [K, D, C]`` matmul (the depth grid's). The two are the same
    map; each keeps the arithmetic its suite was measured with, so numbers stay bit-identical."""

    def __init__(self, n_heads: int, in_dim: int, n_out: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_heads, in_dim, n_out).normal_(0, 0.01, generator=generator))
        self.bias = nn.Parameter(torch.zeros(n_heads, 1, n_out))

    def forward(self, x: torch.Tensor, heads: slice = slice(None)) -> torch.Tensor:
        if x.dim() == 2:
            return torch.einsum("bd,hdc->hbc", x, self.weight[heads]) + self.bias[heads]
        lead, d = x.shape[:-1], x.shape[-1]
        out = torch.matmul(x.reshape(1, -1, d), self.weight[heads]) + self.bias[heads]   # [k, N, C]
        return out.view(-1, *lead, out.shape[-1])


class StackedGrid(HeadGrid):
    """(input config x lr) heads: one :class:`StackedLinear` of ``len(lrs)`` heads per input config.

    Inputs are any hashable objects with ``name`` and a way to build the [B, ..., D] tensor they read
    (the subclass's ``build``); ``decode`` turns one chunk's raw outputs into the grid's outputs
    (identity for class logits, bins -> depth for the depth head). Head k = input k // len(lrs),
    lr k % len(lrs); ``head_names()[k]`` labels row k of every output."""

    prefix = "lin"

    def __init__(self, inputs: Iterable, lrs: Iterable[float], in_dims: Sequence[int], n_out: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.inputs = list(inputs)
        self.lrs = tuple(float(x) for x in lrs)
        self.heads = nn.ModuleList(StackedLinear(len(self.lrs), d, n_out, generator) for d in in_dims)

    @property
    def n_heads(self) -> int:
        return len(self.inputs) * len(self.lrs)

    def head_names(self) -> list[str]:
        return [f"{self.prefix}.{c.name}.lr{lr:g}" for c in self.inputs for lr in self.lrs]

    def chunks(self, chunk: int | None):
        """(group index, input, slice of heads within the group, global offset) covering every head."""
        per = len(self.lrs)
        step = per if not chunk else max(1, min(chunk, per))
        for gi, c in enumerate(self.inputs):
            for s in range(0, per, step):
                yield gi, c, slice(s, min(per, s + step)), gi * per + s

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def outputs(self, build: Callable[[object], torch.Tensor], chunk: int | None = None
                ) -> Iterator[tuple[int, torch.Tensor]]:
        """(offset, decoded outputs of a chunk of heads); each input is built once (``build(input)``)."""
        built: dict = {}
        for gi, c, sl, off in self.chunks(chunk):
            if c not in built:
                built[c] = build(c)
            yield off, self.decode(self.heads[gi](built[c], sl))

    def scale_grads(self, base: float = 1.0) -> None:
        """Give each head its own learning rate: grad of head k *= lr_k * base (see :class:`GridSGD`)."""
        lr = torch.tensor(self.lrs) * base
        for head in self.heads:
            if head.weight.grad is not None:
                head.weight.grad.mul_(lr.view(-1, 1, 1).to(head.weight.grad))
                head.bias.grad.mul_(lr.view(-1, 1, 1).to(head.bias.grad))


# -------------------------------------------------------------------------------------------- optimisers
class GridSGD:
    """SGD momentum 0.9, no weight decay, per-head lr by scaling each head's gradient slice by
    ``lr_k * scale`` and setting the group lr to ``schedule(step)``. With momentum and no weight decay this is
    exactly one param group per head (momentum is linear in the gradient); a test checks it."""
    set_to_none = False

    def __init__(self, grid: StackedGrid, scale: float, total: int,
                 schedule: Callable[[int, int], float] = cosine_factor, momentum: float = 0.9):
        self.grid, self.scale, self.total, self.schedule = grid, scale, total, schedule
        self.opt = torch.optim.SGD(grid.parameters(), lr=1.0, momentum=momentum, weight_decay=0.0)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=self.set_to_none)

    def step(self, step: int) -> None:
        self.grid.scale_grads(self.scale)
        for g in self.opt.param_groups:
            g["lr"] = self.schedule(step, self.total)
        self.opt.step()


class GridAdamW:
    """AdamW with one param group per head (Adam's update does not scale with the gradient, so each head
    needs its own group for its own lr); group lr = ``schedule(initial_lr, step)``."""
    set_to_none = True

    def __init__(self, groups: Sequence[Sequence[nn.Parameter]], lrs: Sequence[float],
                 schedule: Callable[[float, int], float], weight_decay: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.999)):
        if len(lrs) != len(groups):
            raise ValueError(f"{len(lrs)} learning rates for {len(groups)} heads")
        self.schedule = schedule
        self.opt = torch.optim.AdamW([{"params": list(p), "lr": float(lr), "initial_lr": float(lr)}
                                      for p, lr in zip(groups, lrs)],
                                     lr=float(lrs[0]), betas=betas, weight_decay=weight_decay)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=self.set_to_none)

    def step(self, step: int) -> None:
        for g in self.opt.param_groups:
            g["lr"] = self.schedule(g["initial_lr"], step)
        self.opt.step()


class OneCycleAdamW:
    """One head: AdamW + one-cycle schedule (cosine, warm-up ``warmup`` steps, div 25, final div 1000, no
    momentum cycling) + gradient-norm clipping (DINOv3 depth DPT). ``last_lr`` = the lr of the last step."""
    set_to_none = True

    def __init__(self, params, lr: float, total: int, warmup: int, weight_decay: float, grad_clip: float,
                 betas: tuple[float, float] = (0.9, 0.99)):
        self.params = list(params)
        self.grad_clip = grad_clip
        self.opt = torch.optim.AdamW(self.params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=lr, total_steps=max(2, total), pct_start=min(max(warmup, 1), total - 1) / max(2, total),
            anneal_strategy="cos", div_factor=25.0, final_div_factor=1000.0, cycle_momentum=False)
        self.last_lr = float("nan")

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=self.set_to_none)

    def step(self, step: int) -> None:
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.last_lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        if step < self.sched.total_steps - 1:   # OneCycleLR allows total_steps - 1 steps after construction
            self.sched.step()


# ------------------------------------------------------------------------------------------------- train
def train_grid(grid: HeadGrid, batches: Iterator, total: int, loss_fn: Callable, optimizer, *,
               chunk: int | None = None, on_step: Callable[[int, torch.Tensor], None] | None = None
               ) -> torch.Tensor:
    """The one training loop of every grid. ``batches`` yields ``(inputs, target)``; per step: zero grad,
    for each group of heads ``loss_fn(outputs [k, ...], target, step) -> [k]`` summed and back-propagated,
    ``optimizer.step(step)``; ``on_step(step, losses [K])``. Returns the last step's per-head losses."""
    last: torch.Tensor | None = None
    grid.train()
    for step in range(total):
        inputs, target = next(batches)
        optimizer.zero_grad()
        for off, out in grid.train_outputs(inputs, chunk):
            loss = loss_fn(out, target, step)
            loss.sum().backward()
            if last is None:
                last = torch.zeros(grid.n_heads, dtype=loss.dtype)
            last[off:off + loss.shape[0]] = loss.detach().cpu()
        optimizer.step(step)
        if on_step is not None:
            on_step(step, last)
    grid.eval()
    return last if last is not None else torch.zeros(grid.n_heads)


# --------------------------------------------------------------------------------------------- selection
def select(values: Sequence[float] | np.ndarray | torch.Tensor, direction: str) -> int:
    """Index of the best head on held-out data: ``direction`` "min" or "max"; NaN counts as the worst; the
    first best wins a tie (heads are ordered simpler input / smaller lr first)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("no head to select from")
    if direction == "min":
        return int(np.argmin(np.nan_to_num(v, nan=np.inf)))
    if direction == "max":
        return int(np.argmax(np.nan_to_num(v, nan=-np.inf)))
    raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")
