"""Bootstrap 95% intervals for Frechet distances of per-image features (numpy, float64).

    fd_to(feats, ref)                               FD of (n, d) features to reference stats
    fd_with_interval(feats, ref, draws, seed)       FD of (n, d) features to reference stats, resampling the images
    fd_between(fa, fb, draws, seed)                 FD between two image sets from the same seeds (paired draws)
    paired_ratio(fa, fb, ref, draws, seed)          FD(b) / FD(a) to one reference (stats, or a paired set)

Paired means one index draw for both sets: image k of each comes from seed k, so the seed-to-seed noise that
both share cancels and the interval is about the arms, not the seeds.

Every interval is the estimate +- half the width between the resamples' 2.5 and 97.5 percentiles (`centred`), not
those percentiles themselves. A resample repeats about a third of its images, and FD on n images is biased upward
by O(1/n) (fewer distinct images look less like the reference), so the resamples' FDs sit above the estimate:
by 2.4 (2.7 standard deviations) for a one-step generator's FD to the teacher's samples at n = 1,000, and the
percentile interval [13.4, 16.9] missed its own estimate 12.7. On toy Gaussians (d = 32, n = 300, 200 repeats)
the percentile interval covered the expected FD at that n in none, the centred one in 97.5% (a smaller case is
tests/test_bootstrap.py's: 9 of 40 against at least 34). So [lo, hi]
says where FD at this n lands for other seeds; FD at another n differs by its bias: compare arms at equal n, as
the paired ratio does (its percentiles are pulled toward 1, as both FDs carry the bias: centred too).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .frechet import frechet_distance


def _stats(f: np.ndarray):
    return f.mean(0), np.cov(f, rowvar=False)


def fd_to(f: np.ndarray, ref) -> float:
    """FD of (n, d) features against reference statistics (mu, sigma)."""
    return frechet_distance(*_stats(f), ref.mu, ref.sigma)


def centred(point: float, lo: float, hi: float, floor: float | None = None) -> list[float]:
    """[lo, hi] (bootstrap percentiles) moved to be centred on the estimate: point -+ (hi - lo) / 2, not below
    floor (0 for an FD). Applied to its own output it returns it unchanged, unless floor clipped it."""
    half = (hi - lo) / 2
    lo = point - half if floor is None else max(floor, point - half)
    return [round(float(lo), 4), round(float(point + half), 4)]


def _interval(point: float, values, floor: float | None = 0.0) -> list[float]:
    return centred(point, np.percentile(values, 2.5), np.percentile(values, 97.5), floor)


def _draws(n: int, draws: int, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, n, n) for _ in range(draws))


@contextlib.contextmanager
def _one_thread():
    """d x d eigenproblems (d = 128) gain nothing from threads; with 2 threads on a busy 2-core box each FD took
    ~100x longer (a thread waiting on one that is not scheduled)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def fd_with_interval(feats: np.ndarray, ref, draws: int, seed: int) -> dict:
    """FD of (n, d) features against ref, and its 95% interval over `draws` bootstrap resamples (`centred`)."""
    with _one_thread():
        boot = [fd_to(feats[i], ref) for i in _draws(len(feats), draws, seed)]
        point = fd_to(feats, ref)
    return {"fd": round(point, 4), "fd_ci95": _interval(point, boot), "bootstrap_draws": draws}


def fd_between(fa: np.ndarray, fb: np.ndarray, draws: int, seed: int) -> dict:
    """FD between the sets a and b (row k of each from seed k), with a paired bootstrap 95% interval."""
    if fa.shape != fb.shape:
        raise ValueError(f"paired feature sets must have one row per seed in both: {fa.shape} vs {fb.shape}")
    fd = lambda i: frechet_distance(*_stats(fa[i]), *_stats(fb[i]))  # noqa: E731
    with _one_thread():
        boot = [fd(i) for i in _draws(len(fa), draws, seed)]
        point = abs(fd(slice(None)))
    return {"fd": round(point, 4), "fd_ci95": _interval(point, boot), "bootstrap_draws": draws}


def paired_ratio(fa: np.ndarray, fb: np.ndarray, ref, draws: int, seed: int) -> dict:
    """FD(b) / FD(a) on the same seeds, with a paired bootstrap 95% interval (one index draw for both). ref: the
    reference statistics, or (n, d) features of a reference set from the same seeds (a teacher's samples), then
    resampled with the same indices too."""
    if isinstance(ref, np.ndarray):
        def fd(f, i):
            return frechet_distance(*_stats(f[i]), *_stats(ref[i]))
    else:
        def fd(f, i):
            return fd_to(f[i], ref)
    every = slice(None)
    with _one_thread():
        ratios = [fd(fb, i) / fd(fa, i) for i in _draws(len(fa), draws, seed)]
        point = fd(fb, every) / fd(fa, every)
    return {"ratio": round(point, 4), "ci95": _interval(point, ratios, floor=None)}
