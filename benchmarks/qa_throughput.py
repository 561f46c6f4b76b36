"""Spatial-QA generator throughput (samples/s on ONE core; goal >= 200 twelve-turn samples/s/core
from precomputed geometry).

    python benchmarks/qa_throughput.py [--world DIR] [--samples 2000]

Without --world a world (6 scenes x 6 views at 240x320) is rendered into a temp folder by spawned
workers. Measured, all single-threaded in this process:
  * precomputed: per-view geometry cached, then N twelve-turn samples built (templates + answers);
  * raw: per view load + back-projection (kornia, dense) + floor RANSAC + object clouds + one sample;
  * multi-view (2 views) from precomputed geometry (fusion + boxes per sample).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", default=None, help="a ScanNet-layout folder (default: a small generated world written as ScanNet)")
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args(argv)
    world = args.world
    tmp = None
    if world is None:
        from suites.synthetic.world import WorldConfig, generate_world

        tmp = tempfile.TemporaryDirectory()
        world = Path(tmp.name) / "w"
        # workers=2 renders in spawned children: torch._dynamo (imported by roma) segfaults in a
        # process that has rendered with MuJoCo EGL on this machine.
        generate_world(WorldConfig(seed=0, num_scenes=6, views_per_scene=6, image_size=(240, 320), shadows=False,
                                   antialias=0), world, workers=2, progress=False)
        from suites.synthetic.writers import write_scannet     # the generator reads ScanNet's layout
        world = write_scannet(world, Path(tmp.name) / "scannet")
    import torch

    torch.set_num_threads(1)
    from encoders.spatialboost.qa import Generator, QAOptions

    res = {"world": str(world), "threads": 1}
    gen = Generator(world, QAOptions(seed=0))
    units = gen.units()
    # raw views: geometry + one sample each
    t = time.perf_counter()
    n = 0
    for k, u in enumerate(units):
        try:
            gen.make_sample(u, k)
            n += 1
        except Exception:  # noqa: BLE001 - skips count as work done
            pass
    dt = time.perf_counter() - t
    res["raw_views"] = {"views": len(units), "samples": n, "seconds": round(dt, 3),
                        "samples_per_s_per_core": round(n / dt, 1), "ms_per_view": round(1000 * dt / len(units), 2)}
    # sparse back-projection variant
    gen_s = Generator(world, QAOptions(seed=0, dense_backprojection=False))
    t = time.perf_counter()
    for k, u in enumerate(units):
        try:
            gen_s.make_sample(u, k)
        except Exception:  # noqa: BLE001
            pass
    dt = time.perf_counter() - t
    res["raw_views_sparse_backprojection"] = {"ms_per_view": round(1000 * dt / len(units), 2)}
    # precomputed geometry (cache warm): sample building only
    N = args.samples
    t = time.perf_counter()
    made = 0
    for k in range(N):
        try:
            gen.make_sample(units[k % len(units)], k)
            made += 1
        except Exception:  # noqa: BLE001
            pass
    dt = time.perf_counter() - t
    res["precomputed_single_view"] = {"samples": made, "seconds": round(dt, 3), "samples_per_s_per_core": round(made / dt, 1)}
    # multi-view, 2 views, precomputed
    mv = Generator(world, QAOptions(seed=0, views=2, metric="pose"))
    mu = mv.units()
    for u in mu:
        for r in u:
            try:
                mv.geometry(r)
            except Exception:  # noqa: BLE001
                pass
    M = max(1, N // 4)
    t = time.perf_counter()
    made = 0
    for k in range(M):
        try:
            mv.make_sample(mu[k % len(mu)], k)
            made += 1
        except Exception:  # noqa: BLE001
            pass
    dt = time.perf_counter() - t
    res["precomputed_two_view"] = {"pairs": len(mu), "samples": made, "seconds": round(dt, 3),
                                   "samples_per_s_per_core": round(made / dt, 1)}
    print(json.dumps(res, indent=1))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
