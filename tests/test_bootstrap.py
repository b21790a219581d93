"""Bootstrap intervals of Frechet distances (genkit.metrics.bootstrap) against exact answers."""

import numpy as np
import pytest

from genkit.metrics import ReferenceStats
from genkit.metrics.bootstrap import centred, fd_between, fd_with_interval, paired_ratio


def feats(n=400, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_a_shifted_copy_is_exactly_its_squared_shift_in_every_paired_draw():
    """b = a + c: the means differ by c and the covariances are equal, so FD = |c|^2 exactly, and in every paired
    resample too (the same rows of both): the interval collapses to the point. Unpaired draws would not."""
    a, c = feats(), np.array([0.5, -1.0, 0.0, 2.0, 0.0, 0.25])
    out = fd_between(a, a + c, draws=50, seed=0)
    assert out["fd"] == pytest.approx(float(c @ c), abs=1e-3)
    assert out["fd_ci95"] == pytest.approx([float(c @ c)] * 2, abs=1e-3)


def test_a_set_against_itself_is_zero_and_a_ratio_against_itself_is_one():
    a = feats()
    assert fd_between(a, a, draws=20, seed=0) == {"fd": 0.0, "fd_ci95": [0.0, 0.0], "bootstrap_draws": 20}
    ref = ReferenceStats(np.zeros(6), np.eye(6), 10_000, "f", 8)
    assert paired_ratio(a, a, ref, draws=20, seed=0) == {"ratio": 1.0, "ci95": [1.0, 1.0]}


def test_the_interval_covers_the_true_distance_of_a_known_gaussian():
    """Samples of N(m, I) against the exact reference N(0, I): the true FD is |m|^2; the 95% interval of n = 2000
    covers it (FD's small-n bias is ~ d / n here) and the point estimate sits inside its own interval."""
    m = np.full(6, 0.5)
    ref = ReferenceStats(np.zeros(6), np.eye(6), 10**6, "f", 8)
    out = fd_with_interval(feats(2000, seed=3) + m, ref, draws=300, seed=0)
    lo, hi = out["fd_ci95"]
    assert lo <= out["fd"] <= hi
    assert lo - 0.02 <= float(m @ m) <= hi + 0.02 and hi - lo < 0.5


def test_draws_are_seeded_and_unequal_sets_are_refused():
    a, b = feats(seed=1), feats(seed=2)
    assert fd_between(a, b, 30, seed=5) == fd_between(a, b, 30, seed=5)
    with pytest.raises(ValueError, match="one row per seed"):
        fd_between(a, b[:-1], 10, seed=0)


def test_a_ratio_against_a_paired_reference_set_is_exact_for_shifted_copies():
    """Reference set t = a + c1 and b = a + c2 from the same seeds: FD(a, t) = |c1|^2 and FD(b, t) = |c2 - c1|^2 in
    every paired draw, so the ratio and both ends of its interval are |c2 - c1|^2 / |c1|^2."""
    a = feats()
    c1, c2 = np.array([1.0, 0, 0, 0, 0, 0]), np.array([1.0, 2.0, 0, 0, 0, 0])
    out = paired_ratio(a, a + c2, a + c1, draws=30, seed=0)
    assert out["ratio"] == pytest.approx(4.0, abs=1e-3) and out["ci95"] == pytest.approx([4.0, 4.0], abs=1e-3)


def test_the_interval_covers_the_expected_fd_at_this_n_where_the_bias_is_large():
    """Two Gaussians that differ in mean and covariance, d = 16 and n = 150: FD at this n sits well above FD at
    infinite n, and a resample (which repeats about a third of its images) sits above that again. The resamples'
    own 2.5 / 97.5 percentiles then miss the expected FD at this n (the mean over 40 independent repeats) in most
    repeats (covered 9 of 40); the centred interval covers it about 95% of the time (binomial 95% range: >= 34)."""
    d, n, repeats = 16, 150, 40
    rng = np.random.default_rng(0)
    scale = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    draw = lambda shift: rng.normal(size=(n, d)) @ scale.T + shift  # noqa: E731
    runs = [fd_between(rng.normal(size=(n, d)), draw(0.3), draws=100, seed=r) for r in range(repeats)]
    expected = np.mean([r["fd"] for r in runs])
    covered = sum(lo <= expected <= hi for lo, hi in (r["fd_ci95"] for r in runs))
    assert covered >= 34, (covered, expected)
    assert all(lo <= r["fd"] <= hi for r in runs for lo, hi in [r["fd_ci95"]])


def test_centred_moves_percentiles_onto_the_estimate_and_is_idempotent():
    assert centred(12.7, 13.4, 16.9) == [10.95, 14.45]
    assert centred(12.7, 10.95, 14.45) == [10.95, 14.45]
    assert centred(0.5, 0.7, 1.9, floor=0.0) == [0.0, 1.1]
