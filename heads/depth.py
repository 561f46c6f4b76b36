"""Depth heads on frozen patch features: the DINOv2 linear head (as a grid of heads trained at once) and
the depth losses (SigLoss, multi-scale log-gradient loss).

Linear head (DINOv2 ``BNHead`` with ``classify=True``, DINOv3 ``LinearHead``): every patch token (optionally
with the CLS token concatenated, over 1 or 4 blocks: the suite picks which, see ``suites/depth``) -> 1x1 conv to ``n_bins`` logits; the map is
upsampled x4 bilinearly; the logits become a distribution over depth bins by the "linear" rule
``p = relu(l) + 0.1, p /= sum(p)`` (AdaBins); depth = sum(p * bins). DINOv2 upsamples the *features* x4
before the 1x1 conv; we upsample the *logits* after it. Both maps are linear and bilinear weights sum to
one, so the two orders give the same logits (a test checks this) at a fraction of the memory when the
feature dimension exceeds the number of bins.

Bins: "uniform" = ``linspace(min, max, n)`` (DINOv2's "UD"), "log" = ``exp(linspace(ln min, ln max, n))``.
DINOv2 ("SID") and probe3d build log bins with ``torch.logspace(min, max, n)``, i.e. 10**min .. 10**max
(1.0 .. 1e10 m for NYU): that is a bug, and we do not copy it.

Heads that read the same input are stacked into one weight [K, D, n_bins]; each keeps its own learning rate
by scaling its slice of the gradient (equivalent to one SGD param group per head with momentum and no
weight decay: ``heads/grid.py``). Heads are computed in chunks so memory stays bounded: each head's
loss depends only on its own weights, so chunking changes no gradient.

Cost: the x4-upsampled 256-bin map ([heads x B, 16 h w, 256]) dominates a step and grows linearly with the
number of heads; ``_UpsampledLinearBins`` computes upsampling + "linear" rule + expectation as one autograd
node with fewer passes over that map (4-5x faster than the plain autograd graph on CPU, same numbers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal

import torch
import torch.nn.functional as F

from heads.grid import GridSGD, StackedGrid, StackedLinear, train_grid

DEPTH_LRS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1)   # DINOv2's grid within 1e-4..1e-1
CPU_LRS = (1e-4, 1e-3, 1e-2, 1e-1)                                          # the same range, one per decade

BinStrategy = Literal["uniform", "log"]
NormStrategy = Literal["linear", "softmax", "sigmoid"]


def depth_bins(min_depth: float, max_depth: float, n_bins: int = 256, strategy: BinStrategy = "uniform",
               device=None) -> torch.Tensor:
    """Bin centres in metres: uniform ``linspace(min, max, n)`` or log ``exp(linspace(ln min, ln max, n))``."""
    if not 0 < min_depth < max_depth:
        raise ValueError(f"depth range must satisfy 0 < min < max, got [{min_depth}, {max_depth}]")
    if strategy == "uniform":
        return torch.linspace(min_depth, max_depth, n_bins, device=device)
    if strategy == "log":
        return torch.exp(torch.linspace(math.log(min_depth), math.log(max_depth), n_bins, device=device))
    raise ValueError(f"unknown bin strategy '{strategy}' (uniform, log)")


def probs_to_depth(logits: torch.Tensor, bins: torch.Tensor, norm: NormStrategy = "linear") -> torch.Tensor:
    """logits [N, n_bins, H, W] -> depth [N, H, W] = sum(p * bins) with p from ``norm``."""
    if norm == "linear":
        p = torch.relu(logits) + 0.1
    elif norm == "sigmoid":
        p = torch.sigmoid(logits)
    elif norm == "softmax":
        p = torch.softmax(logits, dim=1)
        return F.conv2d(p, bins.view(1, -1, 1, 1).to(p))[:, 0]
    else:
        raise ValueError(f"unknown norm strategy '{norm}' (linear, softmax, sigmoid)")
    w = torch.stack([bins, torch.ones_like(bins)]).view(2, -1, 1, 1).to(p)
    num_den = F.conv2d(p, w)                  # [N, 2, H, W]: sum(p * bins), sum(p)
    return num_den[:, 0] / num_den[:, 1]


class _UpsampledLinearBins(torch.autograd.Function):
    """depth = ``sum_c (relu(u_c) + eps) b_c / sum_c (relu(u_c) + eps)``, u = bilinear x``scale`` upsampling of
    the logits l [N, C, h, w] (channels-last memory), as one autograd node.

    Same values and gradients as the autograd graph of ``interpolate`` + ``probs_to_depth(..., "linear")``
    (tested), with fewer passes over the large [N, 16hw, C] map: the upsampled map is made once and
    rectified in place, the two sums over bins are one [C, 2] matmul, and the backward builds
    ``du_c = 1[u_c > 0] (b_c - depth) g / S`` as one rank-2 matmul and a masked fill before the adjoint of the
    upsampling. Only a bool mask of the big map is kept for the backward."""

    @staticmethod
    def forward(ctx, logits, bins, eps: float, scale: int):
        with torch.no_grad():
            x = logits if scale == 1 else F.interpolate(logits, scale_factor=scale, mode="bilinear",
                                                        align_corners=False)
            u = x.permute(0, 2, 3, 1)
            u = u.clone(memory_format=torch.contiguous_format) if x is logits else u.contiguous()
            off = u <= 0                                             # relu's zero-gradient set
            u.relu_()                                                # relu in place (we own u)
            w = torch.stack([bins, torch.ones_like(bins)], 1).to(u)
            nd = torch.matmul(u, w)                                  # [N, H, W, 2]: sum(r * b), sum(r)
            s = nd[..., 1] + eps * u.shape[-1]
            d = (nd[..., 0] + eps * bins.sum()) / s
        ctx.save_for_backward(off, bins.to(u), d, s)
        ctx.scale = scale
        ctx.in_shape = tuple(logits.shape)
        return d

    @staticmethod
    def backward(ctx, g):
        off, bins, d, s = ctx.saved_tensors
        gs = g / s
        left = torch.stack([gs, -d * gs], -1)                        # [N, H, W, 2]
        right = torch.stack([bins, torch.ones_like(bins)], 0)        # [2, C]
        coef = torch.matmul(left, right).masked_fill_(off, 0.0)      # [N, H, W, C] = (b - d) g / S on r > 0
        coef = coef.permute(0, 3, 1, 2)                              # NCHW view, channels-last memory
        if ctx.scale == 1:
            return coef, None, None, None
        n, c, h, w = ctx.in_shape
        grad = torch.ops.aten.upsample_bilinear2d_backward(coef, list(coef.shape[-2:]), [n, c, h, w], False,
                                                           float(ctx.scale), float(ctx.scale))
        return grad, None, None, None


@dataclass(frozen=True)
class DepthInput:
    """What a linear head reads: patch tokens of the last ``n_layers`` of the blocks it is given (the suite
    gives DINOv2's evenly spaced ones), each optionally with that block's CLS token concatenated to every
    patch token (DINOv2 lin.1 / lin.4)."""
    n_layers: int
    cls: bool

    @property
    def name(self) -> str:
        return f"l{self.n_layers}{'.cls' if self.cls else ''}"

    def dim(self, embed_dim: int) -> int:
        return embed_dim * self.n_layers * (2 if self.cls else 1)

    def build(self, patches: dict[int, torch.Tensor], cls: dict[int, torch.Tensor], blocks: list[int]) -> torch.Tensor:
        """patches {blk: [B,h,w,D]}, cls {blk: [B,D]}, blocks ascending -> [B,h,w,D_in]."""
        parts = []
        for b in blocks[-self.n_layers:]:
            p = patches[b]
            parts.append(p)
            if self.cls:
                parts.append(cls[b][:, None, None, :].expand_as(p))
        return torch.cat(parts, dim=-1)


StackedDepthLinear = StackedLinear   # older name: [B,h,w,D] -> logits [K,B,h,w,n_bins] (channels last)


class LinearDepthGrid(StackedGrid):
    """All (input x lr) linear depth heads. ``head_names()[k]`` labels row k of every output."""

    def __init__(self, inputs: Iterable[DepthInput], lrs: Iterable[float], embed_dim: int, min_depth: float,
                 max_depth: float, n_bins: int = 256, bins: BinStrategy = "uniform", norm: NormStrategy = "linear",
                 upsample: int = 4, generator: torch.Generator | None = None):
        inputs = list(inputs)
        super().__init__(inputs, lrs, [c.dim(embed_dim) for c in inputs], n_bins, generator)
        self.norm = norm
        self.upsample = int(upsample)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.register_buffer("bins", depth_bins(min_depth, max_depth, n_bins, bins), persistent=False)

    def logits_to_depth(self, logits: torch.Tensor) -> torch.Tensor:
        """[k, B, h, w, n_bins] (channels last) -> depth [k, B, h*up, w*up]."""
        k, b, h, w, c = logits.shape
        x = logits.reshape(k * b, h, w, c).permute(0, 3, 1, 2)      # NCHW view in channels-last memory
        if self.norm == "linear":
            d = _UpsampledLinearBins.apply(x, self.bins, 0.1, self.upsample)
        else:
            if self.upsample != 1:
                x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
            d = probs_to_depth(x, self.bins, self.norm)
        return d.reshape(k, b, h * self.upsample, w * self.upsample)

    decode = logits_to_depth

    def forward(self, patches, cls, blocks, chunk: int | None = None) -> torch.Tensor:
        """-> depth [n_heads, B, h*up, w*up] (no gradient bookkeeping; :func:`train_depth_grid` trains)."""
        return torch.cat([out for _, out in self.train_outputs((patches, cls, blocks), chunk)], 0)

    def train_outputs(self, inputs, chunk=None):
        """Chunks of ``chunk`` heads (each input config built once per step): bounded memory, and each
        head's loss depends only on its own weights, so chunking changes no gradient."""
        patches, cls, blocks = inputs
        return self.outputs(lambda c: c.build(patches, cls, blocks), chunk)


def train_depth_grid(grid: LinearDepthGrid, batches, blocks: list[int], total_iters: int, loss_fn,
                     chunk: int | None = None, on_step=None, device=None) -> torch.Tensor:
    """SGD momentum 0.9, no weight decay, lr_k x cosine decay over ``total_iters`` (no batch-size scaling).

    ``batches`` yields (patches {blk: [B,h,w,D]}, cls {blk: [B,D]}, target [B,H,W], valid [B,H,W]);
    ``loss_fn(pred [k,B,H,W], target, valid, step) -> [k]`` (predictions resized to the target).
    ``on_step(step, losses [n_heads])`` after every step. Returns the last step's per-head losses."""
    return train_grid(grid, depth_batches(batches, blocks, device), total_iters, resized_loss(loss_fn),
                      GridSGD(grid, 1.0, total_iters), chunk=chunk, on_step=on_step)


def depth_batches(batches, blocks=None, device=None):
    """(patches, cls, target, valid) batches -> the grid's ((patches, cls[, blocks]), (target, valid)), on
    ``device``; ``blocks=None`` for a head that reads lists of blocks in order (DPT)."""
    for pat, cl, target, valid in batches:
        if device is not None:
            pat = {b: v.to(device) for b, v in pat.items()}
            cl = {b: v.to(device) for b, v in cl.items()}
            target, valid = target.to(device), valid.to(device)
        yield ((pat, cl, blocks), (target, valid))


def resized_loss(loss_fn):
    """``loss_fn(pred, target, valid, step)`` on predictions resized bilinearly to the target's size."""
    def loss(pred, tv, step):
        target, valid = tv
        return loss_fn(resize_to(pred, tuple(target.shape[-2:])), target, valid, step)
    return loss


# ------------------------------------------------------------------------------------------------ losses
def sig_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, warm_up: bool = False,
             variance_focus: float = 0.15, eps: float = 1e-3) -> torch.Tensor:
    """Scale-invariant log loss (AdaBins / DINOv2 ``SigLoss`` / DINOv3), one value per head.

    pred [..., B, H, W] (leading dims = heads), gt / valid [B, H, W]. Over the valid pixels of the whole
    batch: ``g = ln(pred + eps) - ln(gt + eps)``; loss = ``sqrt(var(g) + 0.15 * mean(g)^2)`` with the
    unbiased variance (``torch.var``, as both references). During warm-up (DINOv2 ``warm_up=True``, first
    ``warm_iter`` = 100 iterations) the variance term is left out: loss = ``sqrt(0.15 * mean(g)^2)``.
    Returns [...]; 0 when the batch has no valid pixel."""
    lead = pred.shape[:-3]
    p = pred.reshape(-1, *pred.shape[-3:])[:, valid]             # [K, N]
    if p.shape[-1] == 0:
        return pred.sum((-3, -2, -1)) * 0.0
    g = torch.log(p + eps) - torch.log(gt[valid] + eps)
    dg = variance_focus * g.mean(-1) ** 2
    if not warm_up:
        dg = dg + (g.var(-1) if g.shape[-1] > 1 else torch.zeros_like(dg))
    return torch.sqrt(dg.clamp_min(1e-12)).reshape(lead)


def gradient_log_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, eps: float = 1e-3,
                      strides: tuple[int, ...] = (1, 2, 4, 6)) -> torch.Tensor:
    """Multi-scale gradient matching on log depth (MegaDepth; DINOv2 ``GradientLoss`` / DINOv3
    ``GradientLogLoss``), one value per head. At each scale (sub-sampling ``[::s, ::s]`` with s = 1, 2, 4, 6
    as the references) ``d = (ln(pred+eps) - ln(gt+eps)) * mask``; the loss sums
    ``|d[y] - d[y+2]|`` (both pixels valid) over rows and columns, divided by the number of valid pixels.

    Differences are taken along the image axes of every image. DINOv2 indexes ``input[::s, ::s]`` and
    ``d[0:-2, :]`` on [B, 1, H, W] tensors, i.e. along batch and channel, which leaves nothing (the loss is
    0) with 2 images per GPU; DINOv3 fixed it with ``[..., ::s, ::s]``, which is what we do."""
    lead = pred.shape[:-3]
    p = pred.reshape(-1, *pred.shape[-3:])
    total = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    logt = torch.log(gt.clamp_min(0) + eps)
    for s in strides:
        ps, ts, ms = p[..., ::s, ::s], logt[..., ::s, ::s], valid[..., ::s, ::s]
        n = ms.sum()
        if n == 0:
            continue
        m = ms.to(p.dtype)
        d = (torch.log(ps + eps) - ts) * m
        v = (d[..., :-2, :] - d[..., 2:, :]).abs() * (m[..., :-2, :] * m[..., 2:, :])
        h = (d[..., :, :-2] - d[..., :, 2:]).abs() * (m[..., :, :-2] * m[..., :, 2:])
        total = total + (v.sum((-3, -2, -1)) + h.sum((-3, -2, -1))) / n
    return total.reshape(lead)


@dataclass(frozen=True)
class DepthLoss:
    """SigLoss (+ ``grad_weight`` x gradient log loss, DINOv2 KITTI: 0.5), warm-up for ``warm_iter`` steps."""
    warm_iter: int = 100
    grad_weight: float = 0.0

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, step: int) -> torch.Tensor:
        loss = sig_loss(pred, gt, valid, warm_up=step < self.warm_iter)
        if self.grad_weight:
            loss = loss + self.grad_weight * gradient_log_loss(pred, gt, valid)
        return loss


def resize_to(pred: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[..., h, w] -> [..., H, W] bilinear (align_corners=False)."""
    if tuple(pred.shape[-2:]) == tuple(hw):
        return pred
    lead = pred.shape[:-2]
    out = F.interpolate(pred.reshape(-1, 1, *pred.shape[-2:]), size=tuple(hw), mode="bilinear",
                        align_corners=False)
    return out.reshape(*lead, *hw)
