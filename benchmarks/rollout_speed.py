"""Rollout speed of CortexBench BC evaluation: frames/s and where the time goes (render / encoder / policy / sim).

    python benchmarks/rollout_speed.py [--encoder builtin:tiny-vit] [--task drawer-open] [--size 256]
                                       [--episodes 2] [--steps 100] [--workers 1] [--slow-render]

Runs an untrained BC policy (timing does not depend on the weights) for fixed-length episodes
(stop_at_success off) in spawned workers, exactly the code path of the suite's evaluations; then the
mean-action floor (no render, no encoder) over the same episodes, and the batched demo-frame embedding
(feature extraction) cost per frame, so a protocol's cost can be extrapolated per part.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MUJOCO_GL", "egl")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="builtin:tiny-vit")
    ap.add_argument("--suite", default="metaworld", choices=["metaworld", "dmc"])
    ap.add_argument("--task", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--crop", type=int, default=None)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--slow-render", action="store_true")
    a = ap.parse_args(argv)
    import torch
    from encoders.spec import build_encoder
    from heads.bc_policy import BCPolicy, MeanActionPolicy
    from suites.cortexbench.rollout import RolloutPool, WorkerSpec
    task = a.task or ("drawer-open" if a.suite == "metaworld" else "walker_walk")
    enc = build_encoder(a.encoder)
    blk = enc.info.num_layers - 1
    proprio = 4 if a.suite == "metaworld" else 0
    act = 4 if a.suite == "metaworld" else 6
    kw = {"fast_render": not a.slow_render, "horizon": a.steps}
    from harness.workspace import open_workspace
    spec = WorkerSpec(a.suite, task, a.size, kw, enc, a.crop, "cpu", "fp32", blk, 3, proprio > 0,
                      workspace=str(open_workspace().root))
    torch.manual_seed(0)
    policy = BCPolicy(3 * enc.info.embed_dim + proprio, act).eval()
    seeds = list(range(1000, 1000 + a.episodes))
    with RolloutPool(spec, a.workers) as pool:
        t0 = time.perf_counter()
        pool.evaluate(policy, seeds[:a.workers], False)          # warm-up (spawn, imports, GL context)
        t1 = time.perf_counter()
        rows = pool.evaluate(policy, seeds, False)
        wall = time.perf_counter() - t1
        t2 = time.perf_counter()
        floor_rows = pool.evaluate(MeanActionPolicy(torch.zeros(act)), seeds, False)
        floor_wall = time.perf_counter() - t2
    from suites.images import eval_transform
    tf, _ = eval_transform(enc.info, a.crop)
    import numpy as np
    x = torch.stack([tf(np.full((a.size, a.size, 3), 128, np.uint8))] * 32)
    with torch.inference_mode():
        enc(x[:2], layers=[blk])
        t3, c3 = time.perf_counter(), time.process_time()
        enc(x, layers=[blk])
        feat_ms = 1000 * (time.perf_counter() - t3) / len(x)
        feat_cpu_ms = 1000 * (time.process_time() - c3) / len(x)
    frames = sum(r["steps"] for r in rows)
    parts = {k: sum(r[f"t_{k}"] for r in rows) for k in ("render", "embed", "policy", "sim")}
    busy = sum(parts.values())
    out = {"encoder": a.encoder, "suite": a.suite, "task": task, "size": a.size, "fast_render": not a.slow_render,
           "workers": a.workers, "frames": frames, "wall_s": round(wall, 2), "startup_s": round(t1 - t0, 2),
           "frames_per_s": round(frames / wall, 1), "frames_per_s_per_worker": round(frames / busy, 1),
           **{f"share_{k}": round(v / busy, 3) for k, v in parts.items()},
           **{f"ms_per_frame_{k}": round(1000 * v / frames, 2) for k, v in parts.items()},
           "floor_ms_per_step": round(1000 * floor_wall / max(1, sum(r["steps"] for r in floor_rows)), 2),
           "features_ms_per_frame_batch32": round(feat_ms, 2), "features_cpu_ms_per_frame_batch32": round(feat_cpu_ms, 2),
           "torch_threads": torch.get_num_threads()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
