"""Rollout speed of CortexBench BC evaluation: CPU seconds per frame by part (render / encoder / policy / sim),
lockstep (one batched encoder forward per env step over ``--lockstep`` episodes) against one episode at a time.

    python benchmarks/rollout_speed.py [--encoder builtin:tiny-vit] [--task drawer-open] [--size 128]
                                       [--crop 84] [--layer -1] [--episodes 12] [--steps 100] [--lockstep 12]
                                       [--workers 2] [--slow-render]

Runs an untrained BC policy (timing does not depend on the weights) for fixed-length episodes through
`suites.cortexbench.rollout.run_rollouts`, the suite's code path, twice: all episodes in lockstep, then the
same episodes one at a time (``--sequential-episodes`` of them); then the mean-action floor (no render, no
encoder). CPU seconds (``time.process_time`` in each process) are robust to other load on the machine; wall
seconds are not. Per-part costs let a protocol's cost be extrapolated: frames x (render + embed + policy +
sim) / cores.
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


def _per_frame(rows) -> dict:
    frames = sum(r["steps"] for r in rows)
    return {f"cpu_ms_per_frame_{k}": round(1000 * sum(r[f"t_{k}"] for r in rows) / frames, 2)
            for k in ("render", "embed", "policy", "sim")}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="builtin:tiny-vit")
    ap.add_argument("--suite", default="metaworld", choices=["metaworld", "dmc"])
    ap.add_argument("--task", default=None)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--crop", type=int, default=None)
    ap.add_argument("--layer", type=int, default=-1)
    ap.add_argument("--episodes", type=int, default=12)
    ap.add_argument("--sequential-episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lockstep", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slow-render", action="store_true")
    a = ap.parse_args(argv)
    import torch
    from harness.registry import build_encoder
    from harness.workspace import open_workspace
    from heads.bc_policy import BCPolicy, MeanActionPolicy
    from suites.cortexbench.rollout import Embedder, run_rollouts
    from suites.cortexbench.vecenv import EnvSpec, EnvWorkers
    from suites.images import eval_transform
    task = a.task or ("drawer-open" if a.suite == "metaworld" else "walker_walk")
    enc = build_encoder(a.encoder, open_workspace()).eval()
    blk = enc.resolve_layers([a.layer])[0]
    embed = Embedder(enc, eval_transform(enc.info, a.crop)[0], blk, torch.device("cpu"))
    proprio = 4 if a.suite == "metaworld" else 0
    act = 4 if a.suite == "metaworld" else 6
    torch.manual_seed(0)
    policy = BCPolicy(3 * enc.info.embed_dim + proprio, act).eval()
    seeds = list(range(1000, 1000 + a.episodes))
    t0 = time.perf_counter()
    envs = EnvWorkers(EnvSpec.of(a.suite, task, a.size, {"fast_render": not a.slow_render, "horizon": a.steps}),
                      min(a.lockstep, a.episodes), a.workers)
    out = {"encoder": a.encoder, "suite": a.suite, "task": task, "size": a.size, "crop": a.crop, "block": blk,
           "fast_render": not a.slow_render, "workers": a.workers, "lockstep": envs.n,
           "torch_threads": torch.get_num_threads(), "startup_wall_s": round(time.perf_counter() - t0, 2),
           "load_start": os.getloadavg()[0]}
    try:
        run = dict(embed=embed, use_proprio=proprio > 0)
        t0, c0 = time.perf_counter(), time.process_time()
        rows = run_rollouts(envs, [policy], [(0, s) for s in seeds], **run)
        out["lockstep"] = {"frames": sum(r["steps"] for r in rows), "wall_s": round(time.perf_counter() - t0, 2),
                           "main_cpu_s": round(time.process_time() - c0, 2), **_per_frame(rows)}
        seq = seeds[:a.sequential_episodes]
        t0 = time.perf_counter()
        one = [run_rollouts(envs, [policy], [(0, s)], **run)[0] for s in seq]
        out["one_at_a_time"] = {"frames": sum(r["steps"] for r in one), "wall_s": round(time.perf_counter() - t0, 2),
                                **_per_frame(one)}
        out["same_rows"] = all(r["return"] == o["return"] and r["success"] == o["success"] for r, o in zip(rows, one))
        t0 = time.perf_counter()
        floor = run_rollouts(envs, [MeanActionPolicy(torch.zeros(act))], [(0, s) for s in seeds], **run)
        out["floor_wall_ms_per_step"] = round(1000 * (time.perf_counter() - t0) / sum(r["steps"] for r in floor), 2)
    finally:
        envs.close()
    out["load_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
