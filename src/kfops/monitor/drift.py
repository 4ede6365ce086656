"""Drift scores between a reference distribution and the served one.

Every score is 0 for identical distributions and grows with the shift; a feature has
drifted when its score is above the threshold of its test:

- ``psi``: the Population Stability Index over the reference's bins (or categories),
  ``sum((a - e) * ln(a / e))``; empty bins are floored so that the score stays finite.
  Below 0.1 is usually read as no change, above 0.2 as a significant shift.
- ``jensen_shannon``: the Jensen-Shannon distance (base 2) between the two histograms:
  symmetric, from 0 to 1.
- ``ks``: the two-sample Kolmogorov-Smirnov statistic, the largest gap between the two
  empirical CDFs (0 to 1). Numeric values only.
- ``wasserstein``: the Wasserstein (earth mover's) distance divided by the reference's
  standard deviation, so that one threshold fits features of any scale. Numeric only.

numpy (``pip install 'kfops[monitor]'``) is imported only when a score is computed; the
scores are computed as scipy computes them (the tests check them against scipy), without
importing scipy, which costs seconds in a fresh process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kfops.errors import KfopsError

METHODS = ("psi", "jensen_shannon", "ks", "wasserstein")
NUMERIC_ONLY = ("ks", "wasserstein")
# 1e-4 of the mass: an empty bin counts as "very rare", not as impossible (ln 0).
PSI_FLOOR = 1e-4


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise KfopsError(
            "drift statistics need numpy, which is not installed",
            "install the extra: pip install 'kfops[monitor]'",
        ) from None
    return numpy


def psi(expected: Sequence[float], actual: Sequence[float], *, floor: float = PSI_FLOOR) -> float:
    """The Population Stability Index of ``actual`` against ``expected`` (two histograms
    over the same bins, as fractions or counts; each is normalised to sum to 1)."""
    np = _numpy()
    e = _normalised(np, expected, floor)
    a = _normalised(np, actual, floor)
    _check_same_bins(e, a)
    # Every term is >= 0; rounding may leave a -1e-17 on identical inputs.
    return max(float(np.sum((a - e) * np.log(a / e))), 0.0)


def jensen_shannon(p: Sequence[float], q: Sequence[float]) -> float:
    """The Jensen-Shannon distance (base 2, 0 to 1) between two histograms over the same
    bins (fractions or counts)."""
    np = _numpy()
    first, second = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    _check_same_bins(first, second)
    if first.sum() <= 0 or second.sum() <= 0:
        raise ValueError("a histogram with no mass has no distribution")
    first, second = first / first.sum(), second / second.sum()
    middle = (first + second) / 2

    def entropy(x: Any) -> float:  # relative entropy to the middle, 0 log 0 = 0
        kept = x > 0
        return float(np.sum(x[kept] * np.log(x[kept] / middle[kept])))

    # As scipy.spatial.distance.jensenshannon(base=2) computes it, without scipy.
    value = math.sqrt(max((entropy(first) + entropy(second)) / 2, 0.0) / math.log(2))
    # Rounding may leave a tiny negative under the square root (nan) for equal inputs.
    return 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)


def ks(reference: Sequence[float], current: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (0 to 1): the largest gap between the
    two empirical CDFs, as ``scipy.stats.ks_2samp`` computes it (without its p-value,
    which is slow for large samples and undefined for tiny ones)."""
    np = _numpy()
    _check_nonempty(reference, current)
    first = np.sort(np.asarray(reference, dtype=float))
    second = np.sort(np.asarray(current, dtype=float))
    points = np.concatenate([first, second])
    gap = np.searchsorted(first, points, side="right") / len(first) - np.searchsorted(
        second, points, side="right"
    ) / len(second)
    return float(np.max(np.abs(gap)))


def wasserstein(
    reference: Sequence[float], current: Sequence[float], *, scale: float | None = None
) -> float:
    """The Wasserstein distance between the samples, divided by ``scale`` (default: the
    reference's standard deviation; 1 when that is 0)."""
    np = _numpy()
    _check_nonempty(reference, current)
    first = np.sort(np.asarray(reference, dtype=float))
    second = np.sort(np.asarray(current, dtype=float))
    if scale is None:
        scale = float(np.std(first))
    # The area between the two empirical CDFs, as scipy.stats.wasserstein_distance
    # computes it for unweighted samples (without importing scipy.stats: 2.5 s cold).
    points = np.sort(np.concatenate([first, second]))
    widths = np.diff(points)
    gap = np.searchsorted(first, points[:-1], side="right") / len(first) - np.searchsorted(
        second, points[:-1], side="right"
    ) / len(second)
    distance = float(np.sum(np.abs(gap) * widths))
    return distance / (scale if scale > 0 else 1.0)


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """The share of ``values`` in each bin cut at ``edges``: ``(-inf, e0]``,
    ``(e0, e1]``, ..., ``(e_last, inf)``: ``len(edges) + 1`` bins."""
    np = _numpy()
    if not len(values):
        return [0.0] * (len(edges) + 1)
    index = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float))
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [float(c) for c in counts / len(values)]


def frequencies(values: Sequence[Any], categories: Sequence[str]) -> list[float]:
    """The share of ``values`` (as text) in each category, plus a last share for the
    values in none of them."""
    known = {c: i for i, c in enumerate(categories)}
    counts = [0] * (len(categories) + 1)
    for value in values:
        counts[known.get(category(value), len(categories))] += 1
    total = len(values) or 1
    return [c / total for c in counts]


def category(value: Any) -> str:
    """A categorical value as the profile keeps it: text (``true``, ``3``, ``red``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _normalised(np: Any, values: Sequence[float], floor: float) -> Any:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or not len(array):
        raise ValueError("a histogram is a non-empty list of numbers")
    if (array < 0).any():
        raise ValueError("a histogram has no negative counts")
    total = array.sum()
    if total <= 0:
        raise ValueError("a histogram with no mass has no distribution")
    array = np.maximum(array / total, floor)
    return array / array.sum()


def _check_same_bins(first: Any, second: Any) -> None:
    if first.shape != second.shape:
        raise ValueError(f"histograms over different bins: {len(first)} and {len(second)}")


def _check_nonempty(reference: Sequence[float], current: Sequence[float]) -> None:
    if not len(reference) or not len(current):
        raise ValueError("both samples need at least one value")
