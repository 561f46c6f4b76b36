"""Confidence intervals for differences between runs, from their per-sample statistics.

Paired bootstrap: the same resampled sample ids are scored for both runs, so the interval reflects how
much the difference depends on which samples happened to be in the split, with the per-sample
correlation between the two encoders taken into account (Efron & Tibshirani; the usual test for
"is B better than A on this benchmark"). When two runs do not share their ids the pairing is refused
and an unpaired interval (independent resampling of each run) is given instead, labelled as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.samples import PerSample


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


def paired_bootstrap(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> DeltaCI:
    """CI of ``b - a`` resampling the ids both share (they must share all of them)."""
    if set(a.ids) != set(b.ids):
        raise ValueError(f"runs do not share their sample ids ({len(set(a.ids) ^ set(b.ids))} differ)")
    b = b.aligned(a.ids)
    n = len(a.ids)
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        draws[i] = b.value(idx) - a.value(idx)
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return DeltaCI(b.value() - a.value(), float(lo), float(hi), n, True, resamples)


def unpaired_bootstrap(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95, note: str = "") -> DeltaCI:
    """CI of ``b - a`` resampling each run's samples independently (different splits)."""
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for i in range(resamples):
        draws[i] = b.value(rng.integers(0, len(b), len(b))) - a.value(rng.integers(0, len(a), len(a)))
    lo, hi = np.nanquantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return DeltaCI(b.value() - a.value(), float(lo), float(hi), min(len(a), len(b)), False, resamples, note)


def delta_ci(a: PerSample, b: PerSample, resamples: int = 2000, seed: int = 0) -> DeltaCI:
    """Paired when the ids match, otherwise unpaired with a note that says how many ids differ."""
    if set(a.ids) == set(b.ids):
        return paired_bootstrap(a, b, resamples, seed)
    only_a, only_b = len(set(a.ids) - set(b.ids)), len(set(b.ids) - set(a.ids))
    return unpaired_bootstrap(a, b, resamples, seed, note=f"unpaired: sample ids differ ({only_a} only in the "
                                                           f"first run, {only_b} only in the second)")
