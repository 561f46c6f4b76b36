"""Real MLflow runs in a temp store with per-sample artifacts and floors, as the runner logs them."""
from types import SimpleNamespace

import numpy as np

from harness.runner import log_per_sample
from harness.samples import PerSample

BASE = "builtin:dinov2-s14-focus"
RANDOM = f"random:{BASE}"
BOOST = "boosted:/tmp/ws/boost/1a2b3c4d5e6f7a8b/boosted"


def log_run(tracker, encoder, suite, head, primary, directions, per_sample=None, metrics=None, seed=0,
            tags=None, details=None):
    """One finished run: metrics = the per-sample reductions (+ ``metrics``), result.json, per_sample/."""
    per_sample = per_sample or {}
    metrics = {**{k: v.value() for k, v in per_sample.items()}, **(metrics or {})}
    t = {"encoder": encoder, "suite": suite, "head": head, "seed": seed, "primary_metric": primary,
         "config_hash": f"{encoder}-{suite}-{head}-{seed}", "dataset": "d", "mode": "fast", **(tags or {})}
    with tracker.start(f"{suite}/{encoder}", t, {}, {}) as log:
        log.log_metrics(metrics)
        log.log_dict({"metric_directions": directions, "details": details or {}}, "result.json")
        log_per_sample(log, SimpleNamespace(per_sample=per_sample, metrics=metrics))
        return log.run_id


def samples(ids, values, **kw) -> PerSample:
    return PerSample(list(ids), np.asarray(values, dtype=float), **kw)
