"""Time of the one-pass linear depth grid (K heads trained together) vs one head, and fast vs exact mode.

1. Grid scaling: ms per training step of ``heads.depth.train_depth_grid`` on synthetic tensors
   (B images, an h x w patch grid of D-dim features from 4 blocks, targets at 8x the grid), for
   - ``K=1``: one head (last block, no CLS);
   - ``K=8 lr``: 8 learning rates over that same input (the grid's scaling in the number of heads);
   - ``K=8 mix``: 2 lrs x layers {1,4} x CLS {off,on} (the App. A.3 grid's input mix; the inputs differ in width);
   - ``8 x K=1``: the cost of 8 separate runs (= 8 times the K=1 step).
   With ``--encoder`` the step also includes one encoder forward of the batch (exact mode, where the
   features are recomputed every step), which the heads share.
2. Fast vs exact: whole ``depth.nyud`` runs with the default (CPU-sized) protocol (feature extraction +
   training + evaluation) on a written 240x320 NYUd-format fixture (``--mode-encoder``, default
   builtin:tiny-vit), in ``fast``
   (cached features) and ``exact`` (augmentation and an encoder forward every step) mode.

Wall clock; configs run interleaved --repeats times and the minimum counts (the median is printed too);
on a shared machine the numbers move with the load (the script prints it).

    python benchmarks/depth_grid.py [--batch 4] [--grid 15x20] [--dim 64] [--encoder SPEC] [--iters 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "depth"))


def _make_step(k_lrs, inputs, batch, hw, dim, encoder=None, img_hw=None, chunk=None):
    """A closure that runs ``steps`` training steps of a fresh grid and returns ms per step."""
    import torch
    from heads.depth import DepthInput, DepthLoss, LinearDepthGrid, train_depth_grid

    blocks = [0, 1, 2, 3]
    g = torch.Generator().manual_seed(0)
    h, w = hw
    feats = ({b: torch.randn(batch, h, w, dim, generator=g) for b in blocks},
             {b: torch.randn(batch, dim, generator=g) for b in blocks})
    target = torch.rand(batch, 8 * h, 8 * w, generator=g) * 9 + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    images = torch.randn(batch, 3, *img_hw) if encoder is not None else None

    def batches():
        while True:
            if encoder is not None:
                with torch.no_grad():
                    out = encoder(images, layers=blocks)
                yield ({b: out.layers[b].patches for b in blocks}, {b: out.layers[b].cls for b in blocks},
                       target, valid)
            else:
                yield feats[0], feats[1], target, valid

    grid = LinearDepthGrid([DepthInput(n, c) for n, c in inputs], [0.01 * (i + 1) for i in range(k_lrs)],
                           dim, 1e-3, 10.0)
    it = batches()
    train_depth_grid(grid, it, blocks, 1, DepthLoss(0), chunk=chunk)             # warm-up

    def run(steps):
        t = time.perf_counter()
        train_depth_grid(grid, it, blocks, steps, DepthLoss(0), chunk=chunk)
        return (time.perf_counter() - t) / steps * 1000
    return run


def bench_grid(args) -> dict:
    import torch
    h, w = (int(v) for v in args.grid.split("x"))
    enc = None
    img_hw = None
    if args.encoder:
        from encoders.spec import build_encoder
        enc = build_encoder(args.encoder).eval()
        p = enc.info.patch_size
        img_hw = (h * p, w * p)
        dim = enc.info.embed_dim
    else:
        dim = args.dim
    kw = dict(batch=args.batch, hw=(h, w), dim=dim, encoder=enc, img_hw=img_hw, chunk=args.chunk)
    configs = {"K=1": _make_step(1, [(1, False)], **kw),
               "K=8 lr": _make_step(8, [(1, False)], **kw),
               "K=8 mix": _make_step(2, [(1, False), (1, True), (4, False), (4, True)], **kw)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):            # interleaved, so a load spike hits every config alike
        for k, run in configs.items():
            times[k].append(run(args.steps))
    rows = {k: min(v) for k, v in times.items()}
    rows["8 x K=1"] = 8 * rows["K=1"]
    return {"setting": {"batch": args.batch, "grid": [h, w], "dim": dim, "upsample": 4, "bins": 256,
                        "target": [8 * h, 8 * w], "encoder": args.encoder or None, "chunk": args.chunk,
                        "threads": torch.get_num_threads()},
            "ms_per_step_min": {k: round(v, 1) for k, v in rows.items()},
            "ms_per_step_median": {k: round(statistics.median(v), 1) for k, v in times.items()},
            "ratio_vs_K1": {k: round(v / rows["K=1"], 2) for k, v in rows.items()}}


def bench_modes(args) -> dict:
    from depth_fixtures import make_nyud
    from harness.config import build
    from harness.runner import EvalConfig, evaluate

    tmp = Path(tempfile.mkdtemp(prefix="depth_bench_"))
    try:
        data = make_nyud(tmp / "nyu", n_train=args.n_train, n_test=8, hw=(240, 320))
        res = {}
        for mode in ("fast", "exact"):
            cfg = build(EvalConfig, {"encoder": args.mode_encoder, "suite": "depth.nyud", "data": str(data),
                                     "workspace": str(tmp / f"ws-{mode}"), "progress": False, "mode": mode,
                                     "head": "linear", "protocol": {"iterations": args.iters}})
            t = time.perf_counter()
            rec = evaluate(cfg)
            res[mode] = {"wall_s": round(time.perf_counter() - t, 2), "suite_s": round(rec.metrics["seconds"], 2),
                         "rmse": round(rec.metrics["rmse"], 3), "heads": int(rec.metrics["lin.n_heads"])}
        res["exact_over_fast"] = round(res["exact"]["suite_s"] / res["fast"]["suite_s"], 2)
        res["setting"] = {"n_train": args.n_train, "n_test": 8, "image": [240, 320], "iterations": args.iters,
                          "encoder": args.mode_encoder, "protocol": "defaults (short_side 120, batch 4, 16 heads)"}
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4, help="training batch (suite default 4)")
    ap.add_argument("--grid", default="15x20", help="patch grid h x w (15x20 = the demo's 120x160 at patch 8)")
    ap.add_argument("--dim", type=int, default=64, help="feature dim without --encoder (tiny-vit 64, ViT-S 384)")
    ap.add_argument("--encoder", default=None, help="include this encoder's forward per step (exact mode)")
    ap.add_argument("--chunk", type=int, default=1, help="heads per forward/backward chunk (suite default 1)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--iters", type=int, default=200, help="iterations of the fast/exact runs (default = the suite's)")
    ap.add_argument("--skip-modes", action="store_true")
    ap.add_argument("--mode-encoder", default="builtin:tiny-vit", help="encoder of the fast/exact runs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    report = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "grid": bench_grid(args)}
    if not args.skip_modes:
        report["modes"] = bench_modes(args)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
