"""Cost of the report's reference rows and bootstrap CIs, relative to the demo's suite runs.

    .venv/bin/python benchmarks/report_cost.py [--resamples 2000] [--demo-seconds 900]
        [--suite-seconds-from WORKSPACE:EXPERIMENT]

Logs, in a temporary MLflow store, what the default demo logs for its 6 suites x 3 encoders (baseline,
random-init, boosted) with per-sample artifacts of every primary metric and floor, at sizes at or above
the default world's splits (the world has 144 images in all): depth 200 images, segmentation 200 images
x 150 classes (intersection/union counts), classification 1,000 val samples, Oxford/Paris 70 queries
each, MetaWorld 3 tasks x 10 rollouts. Then builds every table twice:
  plain = the report without reference rows and CIs (baseline and boosted runs only, no per-sample data,
          resamples=0): what the report cost before this round;
  full  = with floors, random-init rows and their Δ rows, per-sample downloads and the paired bootstrap.
The extra cost (full - plain) is compared to the demo's time (its 15 min budget by default, or the sum of
the ``seconds`` metric of a real experiment's runs). The random-init evaluations themselves are suite runs
(counted in the demo's time), not report cost.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from harness.runner import log_per_sample  # noqa: E402
from harness.samples import PerSample  # noqa: E402
from harness.tracking import Tracker  # noqa: E402

BASE = "builtin:dinov2-s14-focus"
BOOST = "boosted:/tmp/ws/boost/0123456789abcdef/boosted"
RANDOM = f"random:{BASE}"

# suite, head, primary metric, floor metric, direction, n samples, reducer, columns, scale
SUITES = [
    ("depth.nyud", "linear", "lin.rmse", "floor.rmse", "min", 200, "mean", 1, 1.0),
    ("seg.ade20k", "linear", "linear.mIoU", "floor.mIoU", "max", 200, "miou", 300, 100.0),
    ("cls.imagenet", "linear,knn", "lin.top1", "floor.top1", "max", 1000, "mean", 1, 100.0),
    ("retrieval.roxford", "knn", "mAP.H", "floor.mAP.H", "max", 70, "mean", 1, 100.0),
    ("retrieval.rparis", "knn", "mAP.H", "floor.mAP.H", "max", 70, "mean", 1, 100.0),
    ("cortexbench.metaworld", "bc", "success", "floor.success", "max", 30, "mean", 1, 100.0),
]


def _samples(rng, n, reduce, cols, scale, shift):
    ids = [f"s{i:05d}" for i in range(n)]
    if reduce == "miou":
        inter = rng.integers(0, 50, (n, cols // 2)) * (rng.random((n, cols // 2)) < 0.1)
        union = inter + rng.integers(0, 50, (n, cols // 2)) * (rng.random((n, cols // 2)) < 0.15)
        stats = np.c_[inter + (shift > 0) * (inter > 0), union]
    elif scale == 100.0:
        stats = (rng.random(n) < 0.5 + shift).astype(float)
    else:
        stats = 1.0 + rng.gamma(2, 0.2, n) - shift
    return PerSample(ids, stats, reduce=reduce, scale=scale)


def populate(uri: str, art: Path, full: bool, seed: int = 0) -> int:
    t = Tracker(uri, "bench", art)
    rng = np.random.default_rng(seed)
    runs = 0
    encoders = [(BASE, {}, 0.0), (BOOST, {"boosted_from": BASE}, 0.1)]
    if full:
        encoders.append((RANDOM, {"random_of": BASE}, -0.1))
    for suite, head, metric, floor, direction, n, reduce, cols, scale in SUITES:
        for enc, tags, shift in encoders:
            per = {metric: _samples(rng, n, reduce, cols, scale, shift)}
            if full and enc == BASE:
                per[floor] = _samples(rng, n, reduce, cols, scale, -0.3)
            metrics = {k: v.value() for k, v in per.items()}
            directions = {metric: direction, metric.split(".", 1)[-1]: direction}
            alltags = {"encoder": enc, "suite": suite, "head": head, "primary_metric": metric, "seed": 0,
                       "config_hash": f"{enc}-{suite}", "dataset": "world", "mode": "fast", **tags}
            with t.start(f"{suite}/{enc}", alltags, {}, {}) as log:
                log.log_metrics(metrics)
                log.log_dict({"metric_directions": directions}, "result.json")
                if full:
                    log_per_sample(log, SimpleNamespace(per_sample=per, metrics=metrics))
            runs += 1
    return runs


def suite_seconds(spec: str) -> float:
    import mlflow
    from harness.workspace import open_workspace
    ws_path, experiment = spec.rsplit(":", 1)
    ws = open_workspace(Path(ws_path))
    client = mlflow.MlflowClient(tracking_uri=ws.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    return float(sum(r.data.metrics.get("seconds", 0.0) for r in runs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--demo-seconds", type=float, default=900.0, help="the demo's time (default: its budget)")
    ap.add_argument("--suite-seconds-from", help="WORKSPACE:EXPERIMENT whose runs' `seconds` to compare to")
    ap.add_argument("--repeat", type=int, default=2, help="builds per variant (the fastest is reported)")
    a = ap.parse_args()
    from reports.build import build_report
    from results.stats import delta_ci
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        times = {}
        for variant, full in (("plain", False), ("full", True)):
            d = tmp / variant
            d.mkdir()
            uri = f"sqlite:///{d}/mlflow.db"
            n = populate(uri, d / "artifacts", full)
            best = float("inf")
            for i in range(a.repeat):
                t0 = time.perf_counter()
                build_report(uri, "bench", d / f"out{i}", resamples=a.resamples if full else 0)
                best = min(best, time.perf_counter() - t0)
            times[variant] = (best, n)
        rng = np.random.default_rng(1)
        x = _samples(rng, 200, "miou", 300, 100.0, 0)
        y = _samples(rng, 200, "miou", 300, 100.0, 0.1)
        t0 = time.perf_counter()
        delta_ci(x, y, a.resamples)
        one_seg_ci = time.perf_counter() - t0
    extra = times["full"][0] - times["plain"][0]
    load = os.getloadavg()[0]
    print(f"report, plain (baseline+boosted, no CIs; {times['plain'][1]} runs): {times['plain'][0]:7.2f} s")
    print(f"report, full (+floors, random-init, paired CIs, {a.resamples} resamples; {times['full'][1]} runs):"
          f" {times['full'][0]:7.2f} s")
    print(f"extra cost of reference rows + bootstrap: {extra:7.2f} s "
          f"= {100 * extra / a.demo_seconds:.2f} % of the demo's {a.demo_seconds:.0f} s (goal < 10 %)")
    print(f"one segmentation CI (200 images x 150 classes, {a.resamples} resamples): {one_seg_ci:.3f} s")
    if a.suite_seconds_from:
        s = suite_seconds(a.suite_seconds_from)
        print(f"suite runs of {a.suite_seconds_from}: {s:.0f} s; extra cost = {100 * extra / s:.2f} % of them")
    print(f"load average (1 min): {load:.2f}")


if __name__ == "__main__":
    main()
