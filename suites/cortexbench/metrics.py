"""CortexBench's numbers from per-evaluation rollout scores: best/last epoch per seed, mean +- std over seeds."""
from __future__ import annotations

import numpy as np


def _std(x) -> float:
    """Sample std over seeds; NaN with one seed (a table shows no ± rather than a false ± 0)."""
    x = np.asarray(x, float)
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def aggregate(curves: dict[str, dict[int, list[tuple[int, float]]]], metric: str) -> dict[str, float]:
    """curves[task][seed] = [(epoch, value), ...] in epoch order -> flat metrics.

    Per task and seed: best = max over evaluations (CortexBench's ``highest_success``/``highest_score``),
    last = the final evaluation. ``<metric>.<task>[.last]`` = mean over seeds, ``.std`` = sample std over
    seeds (ddof=1; 0 for one seed). The suite numbers ``<metric>[.last]`` average the tasks per seed, then
    take mean and std over seeds.
    """
    out: dict[str, float] = {}
    seeds = sorted({s for per in curves.values() for s in per})
    per_seed = {"best": {s: [] for s in seeds}, "last": {s: [] for s in seeds}}
    for task, per in curves.items():
        for kind in ("best", "last"):
            vals = []
            for s in seeds:
                evals = [v for _, v in per[s]]
                v = max(evals) if kind == "best" else evals[-1]
                vals.append(v)
                per_seed[kind][s].append(v)
            suffix = "" if kind == "best" else ".last"
            out[f"{metric}.{task}{suffix}"] = float(np.mean(vals))
            out[f"{metric}.{task}{suffix}.std"] = _std(vals)
    for kind, suffix in (("best", ""), ("last", ".last")):
        avg = [float(np.mean(per_seed[kind][s])) for s in seeds]
        out[f"{metric}{suffix}"] = float(np.mean(avg))
        out[f"{metric}{suffix}.std"] = _std(avg)
    return out


def eval_epochs(epochs: int, every: int) -> list[int]:
    """1-based epochs after which the policy is rolled out: every ``every``-th and the last."""
    return sorted({e for e in range(1, epochs + 1) if e % every == 0} | {epochs})
