"""95% intervals for the study figures: Wilson's interval for a proportion (one seed's accuracy or flip rate) and
a Student-t interval for a mean over seeds (`--seeds N`).

analysis/accuracy.py has only a one-sided Clopper-Pearson bound for the verification verdicts; the studies need
two-sided intervals that stay inside [0, 1] for rates near 0 or 1 with a few hundred questions, which Wilson's do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats  # a hard dependency of scikit-learn, which the project depends on


@dataclass(frozen=True)
class Interval:
    """A central value with its interval (arrays of one shape; NaN where nothing was tested)."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def record(self) -> dict:
        """JSON-ready lists (None for NaN)."""

        def clean(a):
            a = np.asarray(a, dtype=float)
            return None if a.ndim == 0 and np.isnan(a) else np.where(np.isnan(a), None, a).tolist()

        return {"value": clean(self.value), "lo": clean(self.lo), "hi": clean(self.hi)}


def wilson(successes, tested, confidence: float = 0.95) -> Interval:
    """Wilson score interval of successes/tested, elementwise; NaN where tested == 0."""
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(tested, dtype=np.float64)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.where(k == 0, 0.0, np.clip(centre - half, 0.0, 1.0))  # exact at the ends, not 1 - 1e-16
        hi = np.where(k == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    empty = n == 0
    return Interval(np.where(empty, np.nan, p), np.where(empty, np.nan, lo), np.where(empty, np.nan, hi))


def mean_interval(values, axis: int = 0, confidence: float = 0.95) -> Interval:
    """Mean over `axis` (the seeds) with a Student-t interval; a single seed gives lo = hi = the value (no spread
    to estimate). NaN entries (nothing tested in that seed) are left out."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: its mean is NaN, as wanted
        n = np.sum(~np.isnan(v), axis=axis)
        mean = np.nanmean(v, axis=axis) if v.size else np.full(np.delete(v.shape, axis), np.nan)
        sd = np.sqrt(np.nansum((v - np.expand_dims(mean, axis)) ** 2, axis=axis) / np.maximum(n - 1, 1))
        t = np.where(n > 1, stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), 0.0)
        half = t * sd / np.sqrt(np.maximum(n, 1))
    mean = np.where(n == 0, np.nan, mean)
    return Interval(mean, mean - half, mean + half)
