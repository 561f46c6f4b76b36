"""Bootstrap CIs of differences against known answers and the normal approximation."""
import numpy as np
import pytest

from harness.samples import PerSample
from results import stats
from results.stats import delta_ci, delta_ci_runs


def _ids(n):
    return [f"s{i}" for i in range(n)]


def test_constant_shift_gives_zero_width_ci_at_the_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=300)
    ci = delta_ci(PerSample(_ids(300), a), PerSample(_ids(300), a + 0.25))
    assert ci.paired and ci.resamples >= 1000
    assert ci.delta == pytest.approx(0.25) and ci.low == pytest.approx(0.25) and ci.high == pytest.approx(0.25)
    assert ci.significant and ci.better("max") and not ci.better("min")


def test_large_n_paired_mean_difference_matches_normal_approximation():
    rng = np.random.default_rng(2)
    n = 20000
    a = rng.normal(size=n)
    b = a + 0.05 + rng.normal(0, 0.5, n)          # paired: the shared part of a cancels
    ci = delta_ci(PerSample(_ids(n), a), PerSample(_ids(n), b), resamples=1000)
    d = b - a
    half = 1.96 * d.std(ddof=1) / np.sqrt(n)
    assert ci.delta == pytest.approx(d.mean())
    assert ci.low == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert ci.high == pytest.approx(d.mean() + half, abs=0.15 * half)


def test_unpaired_when_ids_differ_matches_two_sample_normal_approximation():
    rng = np.random.default_rng(3)
    n = 5000
    a = PerSample(_ids(n), rng.normal(0, 1, n))
    b = PerSample([f"t{i}" for i in range(n)], rng.normal(0.1, 2, n))
    ci = delta_ci(a, b, resamples=1000)
    assert not ci.paired and "unpaired" in ci.note and f"{n} only in the first run" in ci.note
    half = 1.96 * np.sqrt(a.stats.var(ddof=1) / n + b.stats.var(ddof=1) / n)
    assert ci.high - ci.low == pytest.approx(2 * half, rel=0.15)


def test_seeded_and_reproducible():
    rng = np.random.default_rng(4)
    a, b = PerSample(_ids(50), rng.random(50)), PerSample(_ids(50), rng.random(50))
    assert delta_ci(a, b, seed=7) == delta_ci(a, b, seed=7)
    assert delta_ci(a, b, seed=7) != delta_ci(a, b, seed=8)


@pytest.mark.parametrize("reduce", ["ratio", "miou", "gap", "bleu1", "bleu4"])
def test_block_draws_equal_per_draw_reductions(reduce):
    """The vectorised draws (counts @ stats) reduce each draw exactly as PerSample.value does."""
    rng = np.random.default_rng(5)
    n = 40
    if reduce == "ratio":
        st = np.c_[rng.random(n), rng.random(n) + 0.5]
    elif reduce == "miou":
        inter = rng.integers(0, 10, (n, 4))
        st = np.c_[inter, inter + rng.integers(0, 10, (n, 4))]
    elif reduce.startswith("bleu"):        # (testlen, reflen, guess_1..4, correct_1..4) of real-looking sentences
        testlen = rng.integers(1, 8, n)
        guess = np.stack([np.maximum(0, testlen - k) for k in range(4)], 1)
        st = np.c_[testlen, testlen + rng.integers(-1, 4, n), guess, (guess * rng.random((n, 4))).round()]
    else:
        st = np.c_[rng.random(n), rng.integers(0, 2, n), np.ones(n)]
    ps = PerSample(_ids(n), st, reduce=reduce, scale=100)
    counts = stats._counts(np.random.default_rng(0), 5, n)
    idx = [np.repeat(np.arange(n), c.astype(np.int64)) for c in counts]
    got = stats._draw_values(ps, counts, idx)
    np.testing.assert_allclose(got, [ps.value(i) for i in idx], rtol=1e-12)


def test_seed_mean_paired_over_runs():
    """Two seeds per side, all on the same ids: the CI is that of the seed-mean difference."""
    rng = np.random.default_rng(6)
    a1, a2 = rng.normal(size=100), rng.normal(size=100)
    ids = _ids(100)
    ci = delta_ci_runs([PerSample(ids, a1), PerSample(ids, a2)],
                       [PerSample(ids, a1 + 1.0), PerSample(ids[::-1], (a2 + 3.0)[::-1])])
    assert ci.paired and ci.delta == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0) and ci.high == pytest.approx(2.0)     # shifts are constant per seed
