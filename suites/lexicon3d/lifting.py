"""Lifting 2D patch features onto a scene's 3D points (Lexicon3D / OpenScene multi-view fusion).

Every 3D point (after a ``voxel`` downsampling of the scene cloud) is projected into every frame (frames at
``frame_hw``, intrinsics rescaled to it). It is visible in a frame when it lands inside the frame minus a
``border``-pixel band, in front of the camera, on a pixel with a depth measurement, and that depth agrees
with the point's camera depth within ``occlusion`` metres (absolute; ``occlusion_relative`` = OpenScene's
``vis_thres * depth`` rule). Its feature in that frame is the frame's patch map upsampled bilinearly to the
frame and read at the (rounded) pixel — done as one ``grid_sample`` at the pixel centres, the same numbers as
upsampling the whole map first without materialising it. The point feature is the mean over visible frames.

Frames are split into two groups (first and second half of the scene's frames): each group's mean and
visible count are kept, so one pass serves the semantic probe (all frames: the count-weighted mean of the
two) and the registration pairs (each partial cloud lifted from its own views).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LiftParams:
    frame_hw: tuple[int, int] = (240, 320)
    border: int = 10
    occlusion: float = 0.25
    occlusion_relative: bool = False
    voxel: float = 0.05
    max_points: int | None = None     # per scene, random subset after voxelisation (None = all)
    frame_stride: int = 1
    seed: int = 0

    def key(self) -> dict:
        return {"frame_hw": list(self.frame_hw), "border": self.border, "occlusion": self.occlusion,
                "occlusion_relative": self.occlusion_relative, "voxel": self.voxel, "max_points": self.max_points,
                "frame_stride": self.frame_stride, "seed": self.seed, "groups": "halves", "v": 1}


def voxel_select(coords: np.ndarray, voxel: float) -> np.ndarray:
    """Indices (ascending) of one point per occupied ``voxel`` cell: the first point of the cloud in it."""
    keys = np.floor(coords / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return np.sort(first)


def select_points(coords: np.ndarray, p: LiftParams, scene_seed: int) -> np.ndarray:
    idx = voxel_select(coords, p.voxel)
    if p.max_points is not None and len(idx) > p.max_points:
        rng = np.random.default_rng([p.seed, scene_seed])
        idx = np.sort(rng.choice(idx, p.max_points, replace=False))
    return idx


def project(points: np.ndarray, cam_to_world: np.ndarray, K: np.ndarray, depth: np.ndarray, border: int,
            occlusion: float, relative: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(visible [N] bool, u [N] int, v [N] int) of world ``points`` in a frame whose depth map (metres, 0 =
    none) has the frame's size; (u, v) are rounded pixel coordinates (column, row)."""
    H, W = depth.shape
    R, t = cam_to_world[:3, :3], cam_to_world[:3, 3]
    pc = (points - t) @ R                     # world -> camera: R^T (p - t)
    z = pc[:, 2]
    safe = np.where(z > 1e-6, z, 1.0)
    u = np.round(K[0, 0] * pc[:, 0] / safe + K[0, 2]).astype(np.int64)
    v = np.round(K[1, 1] * pc[:, 1] / safe + K[1, 2]).astype(np.int64)
    inside = (z > 1e-6) & (u >= border) & (v >= border) & (u < W - border) & (v < H - border)
    d = np.zeros(len(points), dtype=np.float64)
    d[inside] = depth[v[inside], u[inside]]
    thr = occlusion * d if relative else occlusion
    vis = inside & (d > 0) & (np.abs(d - z) <= thr)
    return vis, u, v


def sample_features(fmap: torch.Tensor, u: np.ndarray, v: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """Features [n, D] of a patch map ``fmap`` [h, w, D] upsampled bilinearly (align_corners=False) to a
    frame of size ``hw`` and read at integer pixels (u, v)."""
    H, W = hw
    gx = (torch.from_numpy(u).float() + 0.5) / W * 2 - 1
    gy = (torch.from_numpy(v).float() + 0.5) / H * 2 - 1
    grid = torch.stack([gx, gy], -1)[None, None]                      # [1, 1, n, 2]
    src = fmap.permute(2, 0, 1)[None].float()                         # [1, D, h, w]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T                                             # [n, D]


def resize_depth(depth: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (depth must not be blended across edges)."""
    if depth.shape == tuple(hw):
        return depth
    t = torch.from_numpy(np.ascontiguousarray(depth))[None, None]
    return F.interpolate(t, size=hw, mode="nearest")[0, 0].numpy()


def frame_groups(n_frames: int) -> np.ndarray:
    """Group of each frame: 0 = first half of the scene's frames, 1 = second half (Lexicon3D registration:
    views 0-31 vs 32-63, scaled to the scene's view count)."""
    g = np.zeros(n_frames, dtype=np.int64)
    g[n_frames // 2:] = 1
    return g


def lift(points: np.ndarray, frames, hw: tuple[int, int], p: LiftParams, dim: int,
         groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean features per group and point. ``frames`` yields (patch map [h,w,D] tensor, cam_to_world, K at
    ``hw``, depth at ``hw``). Returns (features [G, N, D] float32, counts [G, N] int32); a point seen in no
    frame of a group has count 0 and feature 0."""
    frames = list(frames)
    groups = np.zeros(len(frames), np.int64) if groups is None else np.asarray(groups)
    G = int(groups.max()) + 1 if len(groups) else 1
    n = len(points)
    acc = torch.zeros(G, n, dim, dtype=torch.float32)
    cnt = np.zeros((G, n), dtype=np.int32)
    for (fmap, pose, K, depth), g in zip(frames, groups):
        vis, u, v = project(points, pose, K, depth, p.border, p.occlusion, p.occlusion_relative)
        idx = np.flatnonzero(vis)
        if len(idx) == 0:
            continue
        acc[g].index_add_(0, torch.from_numpy(idx), sample_features(fmap, u[idx], v[idx], hw))
        cnt[g, idx] += 1
    feats = acc / torch.from_numpy(np.maximum(cnt, 1)).float()[..., None]
    return feats.numpy(), cnt
