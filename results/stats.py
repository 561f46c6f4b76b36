"""Confidence intervals for differences between runs, from their per-sample statistics.

Paired bootstrap: the same resampled sample ids are scored for both runs, so the interval reflects how
much the difference depends on which samples happened to be in the split, with the per-sample
correlation between the two encoders taken into account (Efron & Tibshirani; the usual test for
"is B better than A on this benchmark"). When two runs do not share their ids the pairing is refused
and an unpaired interval (independent resampling of each run) is given instead, labelled as such.

Several runs per side (seeds of one cell) are averaged: a paired draw picks one set of ids and scores
every run on it, so the interval is that of the seed-mean difference. Draws are computed in blocks
from resampling counts (counts @ stats), so 2,000 resamples of a few thousand samples take milliseconds;
only the order-dependent ``gap`` reducer falls back to one reduction per draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.samples import PerSample, bleu_from_sums

BLOCK_CELLS = 4_000_000      # resamples x samples per block of counts (32 MB of float64)


@dataclass(frozen=True)
class DeltaCI:
    delta: float            # value(b) - value(a) on all samples
    low: float              # 2.5 % quantile of the bootstrap distribution of the difference
    high: float             # 97.5 %
    n: int                  # samples per draw (shared ids when paired)
    paired: bool
    resamples: int
    note: str = ""          # why the CI is unpaired, when it is

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0 or self.high < 0)

    def better(self, direction: str) -> bool:
        """``b`` beats ``a`` for a metric of this direction ("max"/"min") with the CI excluding 0."""
        return bool(self.low > 0) if direction == "max" else bool(self.high < 0)


def _counts(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """[rows, n] how often each sample is drawn in each of ``rows`` bootstrap draws of size n."""
    idx = rng.integers(0, n, (rows, n), dtype=np.int32) + (np.arange(rows, dtype=np.int32) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _reduce_sums(ps: PerSample, sums: np.ndarray, n: int) -> np.ndarray:
    """The metric of each draw from its column sums [R, K] (mean, ratio, miou, bleuN reducers)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if ps.reduce == "mean":
            out = sums[:, 0] / n
        elif ps.reduce == "ratio":
            out = np.where(sums[:, 1] > 0, sums[:, 0] / sums[:, 1], np.nan)
        elif ps.reduce.startswith("bleu"):
            out = bleu_from_sums(sums, int(ps.reduce[4:]))
        elif ps.reduce == "miou":
            c = sums.shape[1] // 2
            inter, union = sums[:, :c], sums[:, c:]
            iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
            present = (union > 0).sum(1)
            out = np.where(present > 0, np.nansum(iou, 1) / np.maximum(present, 1), np.nan)
        else:
            raise ValueError(f"reducer '{ps.reduce}' has no column-sum form")
    return out * ps.scale


def _draw_values(ps: PerSample, counts: np.ndarray | None, idx: np.ndarray | None) -> np.ndarray:
    if ps.reduce == "gap":
        return np.array([ps.value(i) for i in idx])
    stats = np.nan_to_num(ps.stats) if ps.reduce != "mean" else ps.stats
    return _reduce_sums(ps, counts @ stats, ps.stats.shape[0])


def _bootstrap(a_runs: Sequence[PerSample], b_runs: Sequence[PerSample], paired: bool, resamples: int,
               seed: int) -> np.ndarray:
    """Bootstrap draws of mean(b runs) - mean(a runs)."""
    rng = np.random.default_rng(seed)
    need_idx = any(p.reduce == "gap" for p in [*a_runs, *b_runs])
    n_max = max(len(p) for p in [*a_runs, *b_runs])
    block = max(1, min(resamples, BLOCK_CELLS // max(n_max, 1)))
    out = []
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        draws = np.zeros(rows)
        shared = None
        for sign, runs in ((-1.0, a_runs), (1.0, b_runs)):
            for p in runs:
                if paired and shared is not None:
                    counts, idx = shared
                else:
                    counts = _counts(rng, rows, len(p))
                    idx = None
                    if need_idx:   # the same draws as index lists, for order-dependent reducers
                        idx = [np.repeat(np.arange(len(p)), c.astype(np.int64)) for c in counts]
                    if paired:
                        shared = (counts, idx)
                draws += sign * _draw_values(p, counts, idx) / len(runs)
        out.append(draws)
    return np.concatenate(out)


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_bootstrap(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> DeltaCI:
    """CI of ``b - a`` resampling the ids both share (they must share all of them)."""
    return paired_bootstrap_runs([a], [b], resamples, seed, level)


def paired_bootstrap_runs(a_runs: Sequence[PerSample], b_runs: Sequence[PerSample], resamples: int = 2000,
                          seed: int = 0, level: float = 0.95) -> DeltaCI:
    """CI of the seed-mean ``b - a``; every run must hold the same ids (one draw scores them all)."""
    ids = a_runs[0].ids
    for p in [*a_runs, *b_runs]:
        if set(p.ids) != set(ids):
            raise ValueError(f"runs do not share their sample ids ({len(set(ids) ^ set(p.ids))} differ)")
    a_al = [p.aligned(ids) for p in a_runs]
    b_al = [p.aligned(ids) for p in b_runs]
    draws = _bootstrap(a_al, b_al, True, resamples, seed)
    lo, hi = _interval(draws, level)
    delta = float(np.mean([p.value() for p in b_runs]) - np.mean([p.value() for p in a_runs]))
    return DeltaCI(delta, lo, hi, len(ids), True, resamples)


def unpaired_bootstrap(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95, note: str = "") -> DeltaCI:
    """CI of ``b - a`` resampling each run's samples independently (different splits)."""
    return unpaired_bootstrap_runs([a], [b], resamples, seed, level, note)


def unpaired_bootstrap_runs(a_runs: Sequence[PerSample], b_runs: Sequence[PerSample], resamples: int = 2000,
                            seed: int = 0, level: float = 0.95, note: str = "") -> DeltaCI:
    draws = _bootstrap(a_runs, b_runs, False, resamples, seed)
    lo, hi = _interval(draws, level)
    delta = float(np.mean([p.value() for p in b_runs]) - np.mean([p.value() for p in a_runs]))
    return DeltaCI(delta, lo, hi, min(len(p) for p in [*a_runs, *b_runs]), False, resamples, note)


def delta_ci(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0) -> DeltaCI:
    """Paired when the ids match, otherwise unpaired with a note that says how many ids differ."""
    return delta_ci_runs([a], [b], resamples, seed)


def delta_ci_runs(a_runs: Sequence[PerSample], b_runs: Sequence[PerSample], resamples: int = 2000,
                  seed: int = 0, labels: tuple[str, str] = ("the first run", "the second")) -> DeltaCI:
    """:func:`delta_ci` for cells of several runs (seeds): paired when every run holds the same ids."""
    if not a_runs or not b_runs:
        raise ValueError("delta_ci_runs needs at least one run on each side")
    ids_a = set().union(*(set(p.ids) for p in a_runs))
    ids_b = set().union(*(set(p.ids) for p in b_runs))
    if all(set(p.ids) == ids_a for p in [*a_runs, *b_runs]):
        return paired_bootstrap_runs(a_runs, b_runs, resamples, seed)
    only_a, only_b = len(ids_a - ids_b), len(ids_b - ids_a)
    if only_a or only_b:
        why = f"sample ids differ ({only_a} only in {labels[0]}, {only_b} only in {labels[1]})"
    else:
        why = "sample ids differ between the seeds of one side"
    return unpaired_bootstrap_runs(a_runs, b_runs, resamples, seed, note=f"unpaired: {why}")


def vs_first(ids: Sequence[str], scores: dict[str, Sequence[float]]) -> tuple[list[str], dict[str, DeltaCI]]:
    """Markdown cells ``mean (Δ d [lo, hi])`` per key of ``scores`` (per-sample scores on ``ids``), each later
    key paired-bootstrapped against the first (benchmarks comparing encoders on one set of documents)."""
    keys = list(scores)
    ref = PerSample(list(ids), np.asarray(scores[keys[0]], dtype=float))
    cells, cis = [f"{np.mean(scores[keys[0]]):.3f}"], {}
    for k in keys[1:]:
        ci = cis[k] = paired_bootstrap(ref, PerSample(list(ids), np.asarray(scores[k], dtype=float)))
        cells.append(f"{np.mean(scores[k]):.3f} (Δ {ci.delta:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}])")
    return cells, cis
