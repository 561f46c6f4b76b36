"""Lifting throughput (points x frames per second) and memory vs the encoder forwards of the same frames.

A scene of --points random points on the walls of a 6 x 6 x 3 m room seen by --frames cameras at 240 x 320
(random positions inside, looking at random walls), depth maps rendered from the same points (a z-buffer of
the projected points), patch maps of a ViT-S/14 at 238 x 322 input (17 x 23 x 384). Reports the lifting time
(suites/lexicon3d/lifting.lift: projection, occlusion test, bilinear feature reads, mean), its peak extra RSS,
and the encoder's forward time for the same frames (batch 10). The goal: lifting < the forwards.

    python benchmarks/lifting_speed.py [--points 100000] [--frames 50] [--encoder builtin:dinov2-s14-focus]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suites.lexicon3d.lifting import LiftParams, lift  # noqa: E402

H, W = 240, 320
K = np.array([[288.935, 0, 159.5], [0, 288.935, 119.5], [0, 0, 1]])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _look_at(eye, target) -> np.ndarray:
    """Camera-to-world (OpenCV axes: x right, y down, z forward) at ``eye`` looking at ``target``."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = eye
    return T


def _scene(n_points: int, n_frames: int, rng):
    side = rng.integers(0, 4, n_points)
    a, h = rng.uniform(-3, 3, n_points), rng.uniform(0, 3, n_points)
    pts = np.stack([np.where(side == 0, -3, np.where(side == 1, 3, a)),
                    np.where(side == 2, -3, np.where(side == 3, 3, a)), h], 1)
    frames = []
    for _ in range(n_frames):
        eye = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5), 1.5])
        target = np.array([rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(0.5, 2.5)])
        pose = _look_at(eye, target)
        pc = (pts - pose[:3, 3]) @ pose[:3, :3]
        ok = pc[:, 2] > 0.1
        u = np.round(K[0, 0] * pc[ok, 0] / pc[ok, 2] + K[0, 2]).astype(int)
        v = np.round(K[1, 1] * pc[ok, 1] / pc[ok, 2] + K[1, 2]).astype(int)
        z = pc[ok, 2]
        m = (u >= 0) & (v >= 0) & (u < W) & (v < H)
        depth = np.full((H, W), np.inf)
        np.minimum.at(depth, (v[m], u[m]), z[m])
        depth[np.isinf(depth)] = 0
        frames.append((pose, depth.astype(np.float32)))
    return pts, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--encoder", default="builtin:dinov2-s14-focus", help="'' skips the encoder timing")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    pts, frames = _scene(args.points, args.frames, rng)
    fmaps = [torch.randn(17, 23, args.dim) for _ in frames]
    p = LiftParams(frame_hw=(H, W))
    base = _rss_mb()
    t = time.perf_counter()
    feats, counts = lift(pts, ((f, pose, K, d) for f, (pose, d) in zip(fmaps, frames)), (H, W), p, args.dim,
                         groups=(np.arange(len(frames)) >= len(frames) // 2).astype(int))
    lift_s = time.perf_counter() - t
    peak_extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    out = {"points": args.points, "frames": args.frames, "dim": args.dim, "lift_seconds": round(lift_s, 3),
           "points_x_frames_per_second": round(args.points * args.frames / lift_s),
           "visible_point_frame_pairs": int(counts.sum()), "seen_points": int((counts.sum(0) > 0).sum()),
           "output_MB": round(feats.nbytes / 2**20, 1), "peak_extra_rss_MB": round(peak_extra, 1),
           "threads": args.threads, "load": os.getloadavg()}
    if args.encoder:
        from harness.registry import build_encoder
        enc = build_encoder(args.encoder)
        x = torch.randn(10, 3, 238, 322)
        with torch.inference_mode():
            enc(x[:2], layers=[-4])
            t = time.perf_counter()
            for _ in range(args.frames // 10):
                enc(x, layers=[-4])
        fwd = (time.perf_counter() - t) * args.frames / (10 * (args.frames // 10))
        out.update(encoder=args.encoder, encoder_forward_seconds=round(fwd, 3),
                   lift_over_forward=round(lift_s / fwd, 3))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
