"""Generate MetaWorld v3 expert demos offline (scripted policies) in the documented npz + JSON format.

    python -m suites.cortexbench.generate --out DIR [--tasks drawer-open hammer] [--demos 25] [--size 256]
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from suites.cortexbench.demos import generate_metaworld
    from suites.cortexbench.envs import METAWORLD_TASKS, check_task
    from suites.images import DataError
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="data root (one folder per task is written)")
    ap.add_argument("--tasks", nargs="+", default=list(METAWORLD_TASKS), help="MetaWorld tasks")
    ap.add_argument("--demos", type=int, default=25, help="episodes per task (seeds 0..N-1)")
    ap.add_argument("--size", type=int, default=256, help="frame size in pixels (CortexBench: 256)")
    ap.add_argument("--horizon", type=int, default=500)
    ap.add_argument("--extra-steps", type=int, default=0, help="steps kept after the first success")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slow-render", action="store_true", help="keep shadows and reflections")
    a = ap.parse_args(argv)
    try:
        for t in a.tasks:
            check_task("metaworld", t, METAWORLD_TASKS)
        generate_metaworld(a.out, a.tasks, a.demos, a.size, horizon=a.horizon, extra_steps=a.extra_steps,
                           workers=a.workers, fast_render=not a.slow_render)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
