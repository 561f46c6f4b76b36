"""DPT depth head (Ranftl et al. 2021) as in DINOv2 ``eval/depth/models/decode_heads/dpt_head.py``, in plain torch.

Four ViT blocks -> reassemble (readout "project": ``GELU(Linear(2D -> D)([patch, cls]))``, 1x1 conv to the
post-process channels ``[D/8, D/4, D/2, D]``, resampled x4 (transposed conv), x2 (transposed conv), x1,
x0.5 (3x3 stride-2 conv)) -> 3x3 conv of each to ``channels`` (256) -> four fusion blocks (pre-activation
residual conv units, x2 bilinear upsampling, 1x1 projection), coarsest first -> 3x3 conv + ReLU -> depth
head (3x3 conv to channels/2, x2 upsampling, 3x3 conv to 32, ReLU, 1x1 conv to 1) -> ``relu(x) + min_depth``.
The output is 16x the patch grid; the loss and the metrics resize it bilinearly to the ground truth.

One deliberate difference: the last 1x1 conv's bias starts at ``init_depth`` (1 m) instead of PyTorch's
default. Before that conv the map is nearly constant across pixels, so with the default init the output is
negative at *every* pixel for about half of the seeds (11 of 20 in our check); ``relu`` then passes no
gradient and the head never trains (we hit this on CPU: a DPT head stuck at ``min_depth``).
``channels`` and ``post_process_channels`` may be made smaller for CPU runs. Training: :func:`train_dpt`
(the head as a one-head grid of ``heads/grid.py``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from heads.grid import HeadGrid, OneCycleAdamW, train_grid


def default_post_process(embed_dim: int) -> tuple[int, int, int, int]:
    return (max(1, embed_dim // 8), max(1, embed_dim // 4), max(1, embed_dim // 2), embed_dim)


class Reassemble(nn.Module):
    def __init__(self, embed_dim: int, out_channels: Sequence[int], readout: str = "project"):
        super().__init__()
        if readout not in ("ignore", "add", "project"):
            raise ValueError(f"readout must be ignore, add or project, not '{readout}'")
        self.readout = readout
        self.projects = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in out_channels)
        c0, c1, _, c3 = out_channels
        self.resize = nn.ModuleList([nn.ConvTranspose2d(c0, c0, 4, stride=4), nn.ConvTranspose2d(c1, c1, 2, stride=2),
                                     nn.Identity(), nn.Conv2d(c3, c3, 3, stride=2, padding=1)])
        if readout == "project":
            self.readout_projects = nn.ModuleList(nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU())
                                                  for _ in out_channels)

    def forward(self, patches: Sequence[torch.Tensor], cls: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """patches: 4 x [B,h,w,D], cls: 4 x [B,D] -> 4 maps [B,C_i,h*s_i,w*s_i]."""
        out = []
        for i, (x, c) in enumerate(zip(patches, cls)):
            if self.readout == "project":
                x = self.readout_projects[i](torch.cat([x, c[:, None, None, :].expand_as(x)], dim=-1))
            elif self.readout == "add":
                x = x + c[:, None, None, :]
            x = x.permute(0, 3, 1, 2)
            out.append(self.resize[i](self.projects[i](x)))
        return out


class PreActResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))) with 3x3 convs without bias (mmcv ConvModule order act, conv, norm=None)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    def __init__(self, channels: int, with_skip: bool = True):
        super().__init__()
        self.res1 = PreActResidualConvUnit(channels) if with_skip else None
        self.res2 = PreActResidualConvUnit(channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res1(skip)
        x = self.res2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class DPTDepthHead(nn.Module):
    def __init__(self, embed_dim: int, min_depth: float = 1e-3, channels: int = 256,
                 post_process_channels: Sequence[int] | None = None, readout: str = "project",
                 init_depth: float = 1.0):
        super().__init__()
        pp = tuple(post_process_channels or default_post_process(embed_dim))
        if len(pp) != 4:
            raise ValueError(f"post_process_channels must have 4 values, got {pp}")
        self.min_depth = float(min_depth)
        self.reassemble = Reassemble(embed_dim, pp, readout)
        self.convs = nn.ModuleList(nn.Conv2d(c, channels, 3, padding=1, bias=False) for c in pp)
        self.fusion = nn.ModuleList([FusionBlock(channels, with_skip=False)] +
                                    [FusionBlock(channels) for _ in range(3)])
        self.project = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        half = max(1, channels // 2)
        self.head = nn.Sequential(nn.Conv2d(channels, half, 3, padding=1),
                                  nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                                  nn.Conv2d(half, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1))
        nn.init.constant_(self.head[-1].bias, float(init_depth))   # alive relu at start (see module doc)

    def forward(self, patches: Sequence[torch.Tensor], cls: Sequence[torch.Tensor]) -> torch.Tensor:
        """4 blocks' patches [B,h,w,D] and CLS [B,D], shallow to deep -> depth [B, 16h, 16w] in metres."""
        if len(patches) != 4 or len(cls) != 4:
            raise ValueError(f"the DPT head reads 4 blocks, got {len(patches)}")
        x = [conv(f) for conv, f in zip(self.convs, self.reassemble(patches, cls))]
        out = self.fusion[0](x[-1])
        for i in range(1, 4):
            out = self.fusion[i](out, x[-(i + 1)])
        out = self.head(self.project(out))
        return (F.relu(out) + self.min_depth)[:, 0]


# DINOv2 ``hub/depthers.py`` / DINOv3 depth configs: the 4 blocks the linear "4 layers" and DPT heads read,
# by model depth (ViT-S/B 12, ViT-L 24, ViT-g 40 blocks); other depths fall back to even spacing.
DINOV2_BLOCKS = {12: [2, 5, 8, 11], 24: [4, 11, 17, 23], 40: [9, 19, 29, 39]}


def dpt_blocks(num_layers: int) -> list[int]:
    """The 4 blocks of DINOv2's/DINOv3's per-depth table (12 -> 2,5,8,11; 24 -> 4,11,17,23; 40 -> 9,19,29,39);
    other depths: four evenly spaced blocks ending at the last (fewer than 4 blocks: all of them)."""
    if num_layers in DINOV2_BLOCKS:
        return list(DINOV2_BLOCKS[num_layers])
    return sorted({max(0, round((i + 1) * num_layers / 4) - 1) for i in range(4)}) if num_layers >= 4 else \
        list(range(num_layers))


class DPTGrid(HeadGrid):
    """One DPT head as a grid of K = 1 (``heads/grid.py``): reads its 4 blocks' patches and CLS, shallow to
    deep, from the shared batch (so ``linear,dpt`` runs train on one set of cached features)."""

    lrs: tuple[float, ...] = ()

    def __init__(self, head: DPTDepthHead, blocks: Sequence[int], lr: float):
        super().__init__()
        self.head, self.blocks, self.lrs = head, list(blocks), (float(lr),)

    @property
    def n_heads(self) -> int:
        return 1

    def train_outputs(self, inputs, chunk=None):
        patches, cls, _ = inputs
        yield 0, self.head([patches[b] for b in self.blocks], [cls[b] for b in self.blocks])[None]


def train_dpt(head: DPTDepthHead, batches, blocks: Sequence[int], total: int, loss_fn, *, lr: float, warmup: int,
              weight_decay: float, grad_clip: float, on_step=None, device=None) -> float:
    """DINOv3 NYU's DPT schedule: AdamW (betas 0.9/0.99) + one-cycle over ``total`` steps with ``warmup``
    warm-up steps, gradient-norm clip ``grad_clip`` (0 = none). ``batches`` yields (patches {blk: [B,h,w,D]},
    cls {blk: [B,D]}, target [B,H,W], valid [B,H,W]); ``loss_fn(pred [1,B,H,W], target, valid, step) -> [1]``
    on predictions resized to the target. ``on_step(step, loss, lr)`` after every step. Returns the last loss."""
    from heads.depth import depth_batches, resized_loss
    grid = DPTGrid(head, blocks, lr)
    opt = OneCycleAdamW(head.parameters(), lr, total, warmup, weight_decay, grad_clip)
    report = None if on_step is None else (lambda step, losses: on_step(step, float(losses[0]), opt.last_lr))
    last = train_grid(grid, depth_batches(batches, blocks, device), total, resized_loss(loss_fn), opt,
                      on_step=report)
    return float(last[0])
