"""Segmentation training cost: K heads (one per lr) in one pass vs one head, and fast vs exact mode.

Runs the suite's own training path (its batch makers + ``heads.segmentation.train_heads``) on a synthetic
dataset written in the ADE20K layout and reports seconds per training iteration (median over the iterations of one
measurement; best and median over interleaved repetitions, since the machine's load changes):

- exact K=1 / K=8: encoder forward on random crops every iteration, then 1 or 8 heads;
- fast: the one-off feature extraction of the fixed windows + labels (FeatureCache), then training on
  the cached features, K=1 / K=8;
- fast-patch: the same with `loss_resolution=patch` (loss on the feature grid: no upsampled 150-class logits).

K separate single-head runs would cost K x (K=1); the grid's ratio (K=8)/(K=1) is what one pass saves.
Ratios, not absolute times, are the result: the absolute numbers depend on the machine and its load.

    .venv/bin/python benchmarks/seg_grid.py                       # ViT-S/16 (random weights), crop 224
    .venv/bin/python benchmarks/seg_grid.py --encoder builtin:tiny-vit --crop 64 --iters 20
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="timm:vit_small_patch16_224?random=1")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=6, help="iterations per measurement (first dropped)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (best and median reported)")
    p.add_argument("--heads", default="1,8", help="numbers of heads to compare")
    p.add_argument("--images", type=int, default=24, help="training images (320x240)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave)")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from encoders.spec import build_encoder
    from harness.cache import FeatureCache
    from harness.config import build
    from harness.suite import RunContext
    from segmentation.seg_fixtures import make_ade20k
    from suites.segmentation.mmseg_compat import import_mmseg
    from suites.segmentation.suite import ADE20KSuite, SegOptions

    import_mmseg()
    tmp = Path(tempfile.mkdtemp(prefix="seg-grid-"))
    data = make_ade20k(tmp / "ade", n_train=args.images, n_val=1, size=(240, 320), classes=tuple(range(1, 8)))
    enc = build_encoder(args.encoder).eval()
    cache = FeatureCache(tmp / "cache")
    ks = [int(k) for k in args.heads.split(",")]
    c = args.crop
    from heads.segmentation import train_heads
    from suites.segmentation.protocol import build_segmentor
    opts = build(SegOptions, {"iters": args.iters, "batch_size": args.batch, "warmup_iters": 1, "crop_size": c,
                              "stride": max(1, c * 2 // 3), "scale": c})
    suite = ADE20KSuite(opts)
    # v2: the loss on the patch grid (the demo's choice): no upsampled 150-class logits per step
    suite_patch = ADE20KSuite(build(SegOptions, {**{k: getattr(opts, k) for k in ("iters", "batch_size", "warmup_iters",
                                                                                    "crop_size", "stride", "scale")},
                                                 "loss_resolution": "patch"}))
    ctx = RunContext(encoder=enc, data=data, heads=("linear",), mode="fast", device=torch.device("cpu"),
                     precision="fp32", batch_size=args.batch, num_workers=0, seed=0, cache=cache, progress=False)
    train, _ = suite.splits(data)
    geo = suite.geometry("linear", enc)
    fit = list(range(len(train)))

    def step_time(mode: str, k: int) -> float:
        """Median seconds of one training iteration (first iteration dropped)."""
        model = build_segmentor(enc, geo, 150, num_heads=k, seed=0)
        gen = torch.Generator().manual_seed(0)
        make = {"fast": suite._fast_batches, "exact": suite._exact_batches,
                "fast-patch": suite_patch._fast_batches}[mode]
        batches, _, _ = make(ctx, model, geo, train, fit, gen)
        stamps = [time.perf_counter()]
        train_heads(model.decode_head.heads, batches, model.decode_head.loss_single,
                    [1e-3 * 2 ** i for i in range(k)], args.iters, warmup_iters=1,
                    on_step=lambda s, losses: stamps.append(time.perf_counter()))
        return float(np.median(np.diff(stamps)[1:]))

    env = {"encoder": args.encoder, "embed_dim": enc.info.embed_dim, "crop": c, "batch": args.batch,
           "iters": args.iters, "reps": args.reps, "train_images": args.images, "classes": 150,
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    print(json.dumps(env), flush=True)
    t = time.perf_counter()
    model = build_segmentor(enc, geo, 150, seed=0)
    _, n_windows, _ = suite._fast_batches(ctx, model, geo, train, fit, torch.Generator().manual_seed(0))
    rows: dict[str, float] = {"fast one-off extraction s": time.perf_counter() - t,   # cold cache
                              "fast windows": float(n_windows)}
    samples: dict[str, list[float]] = {}
    for rep in range(args.reps):            # interleaved, so that load changes hit every variant alike
        for k in ks:
            for mode in ("exact", "fast", "fast-patch"):
                v = step_time(mode, k)
                samples.setdefault(f"{mode} K={k} s/iter", []).append(v)
                print(f"rep {rep} {mode} K={k}: {v:.3f} s/iter", flush=True)
    # best-of over repetitions: on a shared machine the least-disturbed measurement is the most faithful
    rows.update({name: float(np.min(v)) for name, v in samples.items()})
    rows.update({name.replace("s/iter", "s/iter median"): float(np.median(v)) for name, v in samples.items()})
    if len(ks) >= 2:
        k0, k1 = ks[0], ks[-1]
        for mode in ("exact", "fast"):
            r = rows[f"{mode} K={k1} s/iter"] / rows[f"{mode} K={k0} s/iter"]
            rows[f"{mode} ratio K={k1}/K={k0}"] = r
            rows[f"{mode} one pass / {k1} single-head runs"] = r / k1
    rows[f"fast/fast-patch s/iter (K={ks[0]})"] = rows[f"fast K={ks[0]} s/iter"] / rows[f"fast-patch K={ks[0]} s/iter"]
    rows[f"exact/fast s/iter (K={ks[0]})"] = rows[f"exact K={ks[0]} s/iter"] / rows[f"fast K={ks[0]} s/iter"]
    rows["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps({k: round(v, 4) for k, v in rows.items()}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
