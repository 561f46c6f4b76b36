"""Peak memory and time of the retrieval search on a Met-sized-ish gallery.

100k gallery images x 384-d features (ViT-S CLS), 70 queries (ROxford's query count). Each
configuration runs in a fresh subprocess so that its peak RSS (ru_maxrss) is its own; "extra" = peak
RSS minus the RSS just before the call (features already in memory; for the memmap row it includes the
file pages mapped while reading). Times: min and median over --repeats calls (wall clock; on a shared
machine trust the min). On CUDA the peak allocated GPU memory is reported too.

    python benchmarks/retrieval_memory.py [--n 100000] [--dim 384] [--nq 70] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "numpy full matrix + argsort (revisitop example)": {"kind": "naive"},
    "rank_gallery full, chunk 32768": {"kind": "full", "chunk": 32768},
    "rank_gallery full, chunk 4096": {"kind": "full", "chunk": 4096},
    "rank_gallery top-100, chunk 32768": {"kind": "topk", "chunk": 32768, "k": 100},
    "rank_gallery top-100, chunk 4096": {"kind": "topk", "chunk": 4096, "k": 100},
    "rank_gallery top-100, fp16 memmap gallery, chunk 8192": {"kind": "topk", "chunk": 8192, "k": 100,
                                                              "memmap": True},
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _child(cfg: dict, n: int, dim: int, nq: int, device: str, repeats: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from suites.retrieval.search import rank_gallery

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((nq, dim), dtype=np.float32)
    if cfg.get("memmap"):
        tmp = Path(tempfile.mkdtemp()) / "g.npy"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        for a in range(0, n, 10000):
            mm[a:a + 10000] = rng.standard_normal((min(10000, n - a), dim), dtype=np.float32)
        mm.flush()
        del mm
        g = np.load(tmp, mmap_mode="r")
    else:
        g = rng.standard_normal((n, dim), dtype=np.float32)

    def call():
        if cfg["kind"] == "naive":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            gn = g / np.linalg.norm(g, axis=1, keepdims=True)
            return np.argsort(-(gn @ qn.T), axis=0).T
        return rank_gallery(q, g, chunk=cfg["chunk"], topk=cfg.get("k"), device=device)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _rss_mb()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = {"seconds_median": sorted(times)[len(times) // 2], "seconds_min": min(times),
           "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1),
           "extra_peak_mb": round(max(0.0, peak - before), 1)}
    if device == "cuda":
        res["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nq", type=int, default=70)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(_child(CONFIGS[args.child], args.n, args.dim, args.nq, args.device, args.repeats)))
        return
    print(f"gallery {args.n} x {args.dim}, {args.nq} queries, device {args.device}, {os.cpu_count()} CPU cores; "
          f"features in memory: gallery {args.n * args.dim * 4 / 2**20:.0f} MB fp32; full ranking output "
          f"{args.nq * args.n * 8 / 2**20:.0f} MB int64")
    print(f"{'configuration':58s} {'min s':>7s} {'median s':>9s} {'peak RSS MB':>12s} {'extra MB':>9s}")
    for name in CONFIGS:
        r = subprocess.run([sys.executable, __file__, "--child", name, "--n", str(args.n), "--dim", str(args.dim),
                            "--nq", str(args.nq), "--device", args.device, "--repeats", str(args.repeats)],
                           capture_output=True, text=True, check=True)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        extra = f" gpu {res['gpu_peak_mb']} MB" if "gpu_peak_mb" in res else ""
        print(f"{name:58s} {res['seconds_min']:7.3f} {res['seconds_median']:9.3f} {res['peak_rss_mb']:12.1f} "
              f"{res['extra_peak_mb']:9.1f}{extra}")


if __name__ == "__main__":
    main()
