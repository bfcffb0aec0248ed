"""Uncertainty for every reported number: bootstrap confidence intervals (scipy) in one small shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from irmscope.errors import IrmscopeError


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_ci(
    values: np.ndarray | list[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """The statistic of ``values`` with a percentile bootstrap interval (deterministic given ``seed``)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise IrmscopeError("cannot summarise an empty set of values; check the inputs produced any")
    point = float(statistic(values))
    if values.size < 2 or np.all(values == values[0]):
        return Estimate(point, point, point, level, int(values.size))
    result = stats.bootstrap(
        (values,),
        lambda x, axis=-1: np.apply_along_axis(statistic, axis, x),
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return Estimate(
        point,
        float(result.confidence_interval.low),
        float(result.confidence_interval.high),
        level,
        int(values.size),
    )


def mean_difference_ci(
    a: np.ndarray | list[float],
    b: np.ndarray | list[float],
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``mean(a) - mean(b)`` for two independent samples, with a percentile bootstrap interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise IrmscopeError("cannot compare empty sets of values; check both inputs produced any")
    low, high = _two_sample_interval(
        a, b, lambda x, y: x.mean(axis=-1) - y.mean(axis=-1), False, level, n_resamples, seed
    )
    return Estimate(float(a.mean() - b.mean()), low, high, level, int(min(a.size, b.size)))


def paired_ratio_ci(
    numerator: np.ndarray | list[float],
    denominator: np.ndarray | list[float],
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``mean(numerator) / mean(denominator)`` over paired values (e.g. per prompt), resampled in pairs.

    For shares such as "the part of the tuning gain an ablation removes": the pairs keep each prompt's
    change and its gain together, so their correlation narrows the interval as it should.
    """
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or a.shape != b.shape:
        raise IrmscopeError(f"need paired values of equal, non-zero length; got {a.size} and {b.size}")
    if b.mean() == 0:
        raise IrmscopeError("the denominator's mean is zero, so the ratio is undefined")
    point = float(a.mean() / b.mean())
    if a.size < 2:
        return Estimate(point, point, point, level, int(a.size))
    low, high = _two_sample_interval(
        a, b, lambda x, y: x.mean(axis=-1) / y.mean(axis=-1), True, level, n_resamples, seed
    )
    return Estimate(point, low, high, level, int(a.size))


def _two_sample_interval(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    paired: bool,
    level: float,
    n_resamples: int,
    seed: int,
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic(a, b)`` (vectorised over the last axis)."""
    result = stats.bootstrap(
        (a, b),
        lambda x, y, axis=-1: statistic(np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)),
        paired=paired,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
