"""Throughput of the synthetic world: full samples vs bare ``mujoco.Renderer`` RGB.

For the same scenes and camera poses it times, per view:

* ``bare``: ``mujoco.Renderer.update_scene`` + ``render()`` (RGB only) - the floor;
* ``sample``: the world's renderer producing RGB + metric depth + instance + semantic
  segmentation + per-object annotations (visible pixels, 2D box, camera-frame boxes);
* ``sample+write``: the same plus encoding the view's files as generate_world does.

ratio = sample views/s / bare views/s (goal >= 0.8). Each configuration runs in a fresh
spawned process so ``ru_maxrss`` (peak resident memory) is per configuration.
Finally ``generate_world`` end to end (workers=1 and 2, including process start-up).

    python benchmarks/world_throughput.py [--scenes 3] [--views 8] [--size 240 320] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _bench_config(args: dict) -> dict:
    if args.get("lp_threads") is not None:  # before any GL context exists in this process
        os.environ["LP_NUM_THREADS"] = str(args["lp_threads"])
    import numpy as np

    from suites.synthetic import scene as S
    from suites.synthetic.render import get_renderer, GL_BACKEND
    from suites.synthetic.world import WorldConfig, annotate, _write_png
    from suites.synthetic._mj import mujoco

    H, W = args["size"]
    cfg = WorldConfig(seed=args["seed"], num_scenes=args["scenes"], views_per_scene=args["views"], image_size=(H, W),
                      shadows=args["shadows"], reflections=args["reflections"], antialias=args["antialias"])
    flip = np.diag([1.0, -1.0, -1.0])
    # bare and full renders are interleaved view by view and summarised by medians, so a
    # busy shared machine slows both sides alike
    bare_t, sample_t, write_t = [], [], []
    n = 0
    tmpdir = Path(tempfile.mkdtemp(prefix="wtp-"))
    for si in range(cfg.num_scenes):
        rng = np.random.default_rng([cfg.seed, si])
        spec = S.sample_scene(rng, cfg.categories, cfg.min_objects, cfg.max_objects, reflections=cfg.reflections)
        poses = S.orbit_cameras(spec, cfg.views_per_scene, np.random.default_rng([cfg.seed, si, 1]))
        cs = S.compile_scene(spec, (H, W), cfg.fovy, cfg.shadows, cfg.antialias, cfg.shadow_size)
        bare = mujoco.Renderer(cs.model, H, W)
        bare.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = cfg.shadows
        bare.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = cfg.reflections
        bare.update_scene(cs.data, 0)
        bare.render()  # warm-up (texture upload, shader compile)
        r = get_renderer()
        r.bind(cs, H, W, shadows=cfg.shadows, reflections=cfg.reflections)
        r.render(poses[0])  # warm-up
        for rep in range(args["repeats"]):
            for k, T in enumerate(poses):
                t0 = time.perf_counter()
                cs.data.cam_xpos[0] = T[:3, 3]
                cs.data.cam_xmat[0] = (T[:3, :3] @ flip).reshape(-1)
                bare.update_scene(cs.data, 0)
                img = bare.render()
                t1 = time.perf_counter()
                f = r.render(T)
                annotate(f, cs.instances)
                t2 = time.perf_counter()
                _write_png(tmpdir / f"{k}_rgb.png", f.rgb)
                np.save(tmpdir / f"{k}_depth.npy", f.depth)
                _write_png(tmpdir / f"{k}_inst.png", f.instance.astype(np.uint16))
                _write_png(tmpdir / f"{k}_sem.png", f.semantic.astype(np.uint8))
                t3 = time.perf_counter()
                assert img.max() > 0
                bare_t.append(t1 - t0)
                sample_t.append(t2 - t1)
                write_t.append(t3 - t2)
                n += 1
        r.unbind()
        bare.close()
        del bare
    tb, ts, tw = (float(np.median(x)) for x in (bare_t, sample_t, write_t))
    import shutil

    shutil.rmtree(tmpdir, ignore_errors=True)
    return {
        "backend": GL_BACKEND,
        "lp_threads": os.environ.get("LP_NUM_THREADS", "default"),
        "shadows": cfg.shadows,
        "reflections": cfg.reflections,
        "antialias": cfg.antialias,
        "views_timed": n,
        "bare_ms": tb * 1e3,
        "sample_ms": ts * 1e3,
        "write_ms": tw * 1e3,
        "bare_views_per_s": 1 / tb,
        "sample_views_per_s": 1 / ts,
        "sample_write_views_per_s": 1 / (ts + tw),
        "ratio": tb / ts,
        "ratio_with_write": tb / (ts + tw),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _run_isolated(fn, arg):
    """Run in a fresh spawned (non-daemonic) process: own peak RSS, own GL state."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, arg).result()


def _bench_generate(args: dict) -> dict:
    from suites.synthetic.world import WorldConfig, generate_world

    H, W = args["size"]
    cfg = WorldConfig(seed=args["seed"] + 100, num_scenes=args["gen_scenes"], views_per_scene=args["views"], image_size=(H, W))
    out = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            generate_world(cfg, Path(d) / "w", workers=workers, progress=False)
            dt = time.perf_counter() - t0
        out[f"workers={workers}"] = {"seconds": dt, "views_per_s": cfg.num_scenes * cfg.views_per_scene / dt}
    out["peak_rss_mb_parent"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    ap.add_argument("--antialias", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lp-threads", nargs="+", default=["default"],
                    help="llvmpipe rasteriser threads per run ('default' = Mesa's choice); same on both sides")
    ap.add_argument("--gen-scenes", type=int, default=4)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--json", type=str, default=None)
    a = ap.parse_args(argv)
    base = dict(repeats=a.repeats, scenes=a.scenes, views=a.views, size=tuple(a.size), antialias=a.antialias, seed=a.seed, gen_scenes=a.gen_scenes)
    rows = []
    combos = [(lp, sh, rf) for lp in a.lp_threads for sh, rf in ((True, True), (True, False), (False, True), (False, False))]
    for lp, shadows, reflections in combos:
        r = _run_isolated(_bench_config, dict(base, shadows=shadows, reflections=reflections,
                                              lp_threads=None if lp == "default" else int(lp)))
        rows.append(r)
        print(
            f"[{r['backend']} LP_NUM_THREADS={r['lp_threads']}] shadows={str(shadows):5} reflections={str(reflections):5} aa={r['antialias']} "
            f"bare {r['bare_views_per_s']:7.1f} v/s | sample {r['sample_views_per_s']:7.1f} v/s "
            f"(ratio {r['ratio']:.2f}) | +write {r['sample_write_views_per_s']:7.1f} v/s (ratio {r['ratio_with_write']:.2f}) "
            f"| peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    result = {"size": list(a.size), "configs": rows, "cpu_count": os.cpu_count()}
    if not a.skip_generate:
        g = _run_isolated(_bench_generate, base)
        result["generate_world"] = g
        for k, v in g.items():
            if isinstance(v, dict):
                print(f"generate_world {k}: {v['views_per_s']:.1f} views/s ({v['seconds']:.1f} s for {a.gen_scenes}x{a.views} views)")
        print(f"generate_world peak RSS: parent {g['peak_rss_mb_parent']:.0f} MB, largest child {g['peak_rss_mb_children']:.0f} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
