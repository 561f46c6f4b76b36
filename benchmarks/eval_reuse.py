"""(b) A second evaluation of the same encoder/dataset vs the first.

    .venv/bin/python benchmarks/eval_reuse.py [--encoder builtin:dinov2-s14-focus] [--per-class 20]

Times three evaluations on a generated ImageFolder set (in a temporary workspace): the first (features
computed), an identical second one (finished run reused), and a --force rerun (features from the cache).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))   # before tests/, whose harness/ folder would shadow the package

from fixtures import make_imagefolder  # noqa: E402
from harness.config import build  # noqa: E402
from harness.runner import EvalConfig, evaluate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="builtin:dinov2-s14-focus")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--classes", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_imagefolder(Path(tmp) / "data", n_classes=a.classes, train_per_class=a.per_class,
                                val_per_class=max(2, a.per_class // 4), size=96)
        ws = Path(sys.argv[0]).resolve().parent.parent / "workspace"  # reuse converted weights if present

        def run(force):
            cfg = build(EvalConfig, {"encoder": a.encoder, "suite": "cls.imagenet", "data": str(data),
                                     "workspace": str(ws), "experiment": "bench-eval-reuse", "force": force,
                                     "progress": False, "protocol": {"epochs": 5}})
            t = time.perf_counter()
            rec = evaluate(cfg)
            return time.perf_counter() - t, rec

        first, r1 = run(force=True)   # force: never pick up an earlier benchmark's run
        second, r2 = run(force=False)
        forced, r3 = run(force=True)
        print(f"encoder {a.encoder}, {a.classes} classes x {a.per_class} train images")
        print(f"first eval (features computed) : {first:7.2f} s")
        print(f"second eval (run reused)       : {second:7.2f} s  ratio {second / first:.3f}  reused={r2.reused}")
        print(f"--force eval (cached features) : {forced:7.2f} s  ratio {forced / first:.3f}")


if __name__ == "__main__":
    main()
