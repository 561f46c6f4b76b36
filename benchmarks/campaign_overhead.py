"""Campaign overhead per job and local-pool throughput (issue #18's goals: overhead under 5 % of a job of a
minute; 2 workers vs 1 on this machine).

    python benchmarks/campaign_overhead.py [--suite cls.imagenet] [--world tiny] [--jobs 4]

(1) the same evaluation as a plain ``spatialboost eval --force`` and as a one-job campaign (``force`` in the
campaign's eval section), each in a fresh process, wall clock; (2) ``--jobs`` jobs (seeds) with 1 worker
and with 2 workers. Features are cached by the first pass, so every timed pass does the same work.
Prints a JSON line; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="cls.imagenet")
    ap.add_argument("--encoder", default="builtin:dinov2-s14-focus")
    ap.add_argument("--world", default="tiny")
    ap.add_argument("--jobs", type=int, default=4)
    a = ap.parse_args(argv)
    from harness.registry import SUITES
    protocol = SUITES.get(a.suite).demo_protocol(a.world)
    ws = Path(tempfile.mkdtemp(prefix="sb-campaign-bench-"))
    env = {**os.environ, "SPATIALBOOST_HOME": str(ws)}
    cli = [sys.executable, "-m", "harness.commands.cli"]
    overrides = [f"protocol.{k}={json.dumps(v)}" for k, v in protocol.items()]
    direct = [*cli, "eval", "--encoder", a.encoder, "--suite", a.suite, "--world", a.world, "--no-progress",
              "--force", *overrides]
    _timed(direct, env)                                       # warm: world, formats, converted weights, features

    def campaign(seeds, workers, force=True) -> list[str]:
        f = ws / f"c-{len(seeds)}-{workers}.yaml"
        f.write_text(yaml.safe_dump({"experiment": f"bench-{len(seeds)}-{workers}", "world": a.world,
                                     "encoders": [a.encoder], "suites": {a.suite: {"protocol": protocol}},
                                     "seeds": seeds, "workers": workers, "report": False,
                                     "eval": {"force": force}}))
        return [*cli, "campaign", str(f), "--no-progress"]

    t_direct = _timed(direct, env)
    t_campaign = _timed(campaign([0], 1), env)
    seeds = list(range(100, 100 + a.jobs))
    t1 = _timed(campaign(seeds, 1), env)
    t2 = _timed(campaign(seeds, 2), env)
    print(json.dumps({"suite": a.suite, "world": a.world, "encoder": a.encoder, "direct_s": round(t_direct, 1),
                      "one_job_campaign_s": round(t_campaign, 1),
                      "overhead_pct": round(100 * (t_campaign - t_direct) / t_direct, 1),
                      f"{a.jobs}_jobs_1_worker_s": round(t1, 1), f"{a.jobs}_jobs_2_workers_s": round(t2, 1),
                      "speedup_2_vs_1": round(t1 / t2, 2), "cpus": os.cpu_count(),
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
