"""DINOv2-style linear segmentation heads (``BNHead``): BatchNorm + 1x1 conv on frozen patch tokens.

Pure torch: the mmsegmentation wrapper (a ``BaseDecodeHead`` subclass) lives in
``suites/segmentation/mmseg_compat.py`` and delegates to :class:`StackedBNLinear`.

K heads (one per learning rate) train at once on the same features. They share the BatchNorm
*statistics* (every head normalises the same input with the same batch mean/var, so the running stats
are identical too) and keep their own affine (gamma, beta) and 1x1 conv. ``BN(affine) -> conv`` is
computed as ``conv_{W*gamma, b + W.beta}(xhat)``, which is exactly one ``nn.BatchNorm2d`` + ``nn.Conv2d``
per head (a test checks it). Each head has its own ``nn.Parameter`` objects so that AdamW (whose update
does not scale with the gradient) can give every head its own learning rate via its own param group
(``GridAdamW`` of ``heads/grid.py``, whose ``train_grid`` is the training loop).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from heads.grid import GridAdamW, HeadGrid, endless, poly_warmup_lr, train_grid


def resize_concat(maps: Sequence[torch.Tensor], align_corners: bool = False) -> torch.Tensor:
    """NCHW maps -> bilinearly resized to the first map's size, concatenated on channels (the +ms input)."""
    size = maps[0].shape[-2:]
    return torch.cat([m if m.shape[-2:] == size else
                      F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners)
                      for m in maps], dim=1)


class StackedBNLinear(HeadGrid):
    """K independent ``BatchNorm2d(D) -> Conv2d(D, C, 1)`` heads over the same input [B, D, h, w]."""

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 1, *, eps: float = 1e-5,
                 momentum: float = 0.1, init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.in_channels, self.num_classes, self.num_heads = in_channels, num_classes, num_heads
        self.norm = nn.BatchNorm2d(in_channels, eps=eps, momentum=momentum, affine=False)
        self.gamma = nn.ParameterList(nn.Parameter(torch.ones(in_channels)) for _ in range(num_heads))
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(in_channels)) for _ in range(num_heads))
        # conv_seg init of mmseg's BaseDecodeHead / DINOv2: Normal(0, 0.01), bias 0
        self.weight = nn.ParameterList(
            nn.Parameter(torch.empty(num_classes, in_channels).normal_(0, init_std, generator=generator))
            for _ in range(num_heads))
        self.bias = nn.ParameterList(nn.Parameter(torch.zeros(num_classes)) for _ in range(num_heads))

    def head_parameters(self, k: int) -> list[nn.Parameter]:
        return [self.gamma[k], self.beta[k], self.weight[k], self.bias[k]]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Shared, parameter-free BatchNorm (train mode: batch stats + running-stat update)."""
        return self.norm(x)

    def _folded(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight[k] * self.gamma[k]                      # [C, D]
        b = self.bias[k] + self.weight[k] @ self.beta[k]        # [C]
        return w, b

    def project(self, xhat: torch.Tensor, k: int) -> torch.Tensor:
        """Head k on a normalised input: [B, D, h, w] -> logits [B, C, h, w]."""
        w, b = self._folded(k)
        return F.conv2d(xhat, w[:, :, None, None].to(xhat.dtype), b.to(xhat.dtype))

    def project_all(self, xhat: torch.Tensor) -> torch.Tensor:
        """All heads in one conv: [B, D, h, w] -> [B, K*C, h, w] (head k = channels k*C:(k+1)*C)."""
        ws, bs = zip(*(self._folded(k) for k in range(self.num_heads)))
        w = torch.cat(ws, 0)[:, :, None, None].to(xhat.dtype)
        return F.conv2d(xhat, w, torch.cat(bs, 0).to(xhat.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_all(self.normalize(x))

    @property
    def n_heads(self) -> int:
        return self.num_heads

    def train_outputs(self, x: torch.Tensor, chunk=None):
        """The shared BatchNorm once per step (no gradient: it has no parameters), then one head at a time,
        so only one head's full-resolution logits are alive: (k, logits [1, B, C, h, w])."""
        with torch.no_grad():
            xhat = self.normalize(x)
        for k in range(self.num_heads):
            yield k, self.project(xhat, k)[None]


def patch_centre_labels(labels: torch.Tensor, patch: int, ignore_index: int = 255) -> torch.Tensor:
    """[B, H, W] labels -> [B, h, w]: the label at the centre pixel of each patch of the centre-padded grid
    the encoder sees (DINOv2 ``CenterPadding``: ceil(H/p) x ceil(W/p) patches). A loss on these is taken on
    the feature grid itself, with no upsampled logits (``loss_resolution='patch'``); cells whose centre falls
    in the padding are ``ignore_index``."""
    if patch < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    h, w = labels.shape[-2:]

    def centres(n: int) -> torch.Tensor:
        cells = -(-n // patch)
        offset = (cells * patch - n) // 2
        return torch.arange(cells) * patch + patch // 2 - offset

    ys, xs = centres(h), centres(w)
    out = labels[..., ys.clamp(0, h - 1), :][..., xs.clamp(0, w - 1)].clone()
    outside = ~(((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :])
    out[..., outside] = ignore_index
    return out


def make_optimizer(head: StackedBNLinear, lrs: Sequence[float], weight_decay: float = 1e-4,
                   betas: tuple[float, float] = (0.9, 0.999), schedule=None) -> GridAdamW:
    """AdamW with one param group per head (its own lr); ``initial_lr`` keeps the base lr."""
    if len(lrs) != head.num_heads:
        raise ValueError(f"{len(lrs)} learning rates for {head.num_heads} heads")
    return GridAdamW([head.head_parameters(k) for k in range(head.num_heads)], lrs,
                     schedule or (lambda lr, step: lr), weight_decay, betas)


def train_heads(head: StackedBNLinear, batches: Callable[[], Iterator[tuple[torch.Tensor, object]]],
                loss_fn: Callable[[torch.Tensor, object], torch.Tensor], lrs: Sequence[float], iters: int, *,
                weight_decay: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                warmup_iters: int = 1500, warmup_ratio: float = 1e-6, power: float = 1.0,
                min_lr: float = 0.0, on_step: Callable[[int, list[float]], None] | None = None) -> list[float]:
    """Train all K heads for ``iters`` steps (AdamW, poly schedule with linear warm-up); ``batches()`` yields
    (input [B,D,h,w], target) and is called again when it runs dry. ``loss_fn(logits_k, target)`` is one
    head's loss (the suite passes mmseg's ``loss_by_feat``). Returns the last step's per-head losses."""
    opt = make_optimizer(head, lrs, weight_decay, betas,
                         lambda lr, step: poly_warmup_lr(lr, step, iters, warmup_iters, warmup_ratio, power, min_lr))
    report = None if on_step is None else (lambda step, losses: on_step(step, losses.tolist()))
    last = train_grid(head, endless(batches), iters, lambda out, target, step: loss_fn(out[0], target).reshape(1),
                      opt, on_step=report)
    return last.tolist() if iters > 0 else []
