"""What both Lexicon3D suites share: the lifting options, data access, the train/held-out scene split."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.config import ConfigError, check_range, field
from harness.suite import Suite
from suites.lexicon3d.features import Lifted, lifted_features
from suites.lexicon3d.lifting import LiftParams
from suites.lexicon3d.scannet import ScanNetData


@dataclass(frozen=True)
class LiftOptions:
    layer: int = field(-1, help="block whose patch map is lifted (negative: from the end; Lexicon3D: the last)")
    frame_size: tuple[int, int] = field((240, 320), min=8, help="frames (H, W) the features are lifted at; "
                                        "intrinsics rescaled (Lexicon3D: 240x320)")
    border: int = field(10, min=0, help="pixels cut at each frame border (Lexicon3D: 10)")
    occlusion: float = field(0.25, min=0, min_open=True, help="depth-occlusion test (m): a point is visible "
                             "where |frame depth - point depth| <= this (Lexicon3D: 0.25)")
    occlusion_relative: bool = field(False, help="OpenScene's rule: threshold = occlusion x frame depth")
    voxel: float = field(0.05, min=0, min_open=True, help="voxel size (m) the scene cloud is downsampled to")
    max_points: int | None = field(None, min=1, help="at most this many points per scene (seeded random subset "
                                   "after voxelisation; None = all)")
    frame_stride: int = field(1, min=1, help="every n-th frame of a scene")
    holdout_fraction: float = field(0.2, min=0, max=1, min_open=True, max_open=True,
                                    help="train scenes held out for selection (never val)")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            check_range(getattr(self, f.name), f.metadata, f"protocol.{f.name}")
        if len(self.frame_size) != 2:
            raise ConfigError(f"protocol.frame_size={self.frame_size!r}: need (H, W)")
        if 2 * self.border >= min(self.frame_size):
            raise ConfigError(f"protocol.border={self.border}: leaves no pixel of a {self.frame_size} frame")

    def lift_params(self) -> LiftParams:
        return LiftParams(tuple(self.frame_size), self.border, self.occlusion, self.occlusion_relative, self.voxel,
                          self.max_points, self.frame_stride)


def resolve_layer(encoder, layer: int) -> int:
    try:
        return encoder.resolve_layers([layer])[0]
    except ValueError as e:
        raise ConfigError(f"protocol.layer={layer}: {e}") from None


def load(ctx, o: LiftOptions) -> tuple[ScanNetData, Lifted, int]:
    data = ScanNetData(ctx.data)
    layer = resolve_layer(ctx.encoder, o.layer)
    return data, lifted_features(ctx, data, o.lift_params(), layer), layer


def split_scenes(lifted: Lifted, fraction: float) -> tuple[list[int], list[int], list[int]]:
    """(fit, held-out, val) scene indices; the held-out part is every k-th train scene (at least one, and
    at least one left to fit when train has two or more)."""
    train = [k for k, s in enumerate(lifted.splits) if s == "train"]
    val = [k for k, s in enumerate(lifted.splits) if s == "val"]
    n_hold = min(max(1, int(round(fraction * len(train)))), max(1, len(train) - 1))
    hold_pos = set(np.unique(np.linspace(0, len(train) - 1, n_hold).round().astype(int)).tolist()) \
        if len(train) > 1 else set()
    hold = [k for i, k in enumerate(train) if i in hold_pos]
    fit = [k for i, k in enumerate(train) if i not in hold_pos]
    if not hold:          # one train scene: select on it too (said in details)
        hold = list(fit)
    return fit, hold, val


def default_root(workspace) -> Path:
    from suites.synthetic.defaults import scannet_root
    return scannet_root(workspace)


@contextlib.contextmanager
def small_ops_threads(device):
    """One intra-op thread on CPU while training the small heads: their per-step tensors are tiny, and with
    2+ threads the synchronisation dominates (measured: a d64 2-layer REGTR step 2-3 s with 2 threads on a
    busy 2-core machine, 0.1 s with 1). The previous setting is restored."""
    if getattr(device, "type", str(device)) != "cpu":
        yield
        return
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class LiftedSuite(Suite):
    """A suite whose head trains on lifted point features: one (cached) lifting pass, then
    ``_train_and_score(ctx, lifted, layer, lift_seconds)`` with the small-ops thread setting."""

    def run(self, ctx):
        import time
        t0 = time.perf_counter()
        _, lifted, layer = load(ctx, self.options)
        t_lift = time.perf_counter() - t0
        with small_ops_threads(ctx.device):
            return self._train_and_score(ctx, lifted, layer, t_lift)

    def _train_and_score(self, ctx, lifted, layer, lift_seconds: float):
        raise NotImplementedError
