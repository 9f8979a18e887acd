"""Means and 95% confidence intervals over repeats, and whether two techniques differ beyond them.

Why here: a verdict like "sparse-int8 is 4 points worse than sparse-fp32" from one seed is noise as often as not; the
records stage says how sure a figure is, so the report and the regression gate can say what is significant. The t
quantiles are tabulated (two-sided 95%), so no statistics library is needed at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95% Student t quantiles (0.975) for 1..30 degrees of freedom
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.959964


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (fractional df interpolated in 1/df, which
    is how the quantile varies; above 30 the Cornish-Fisher expansion around the normal quantile)."""
    if df <= 0 or math.isnan(df):
        return math.nan
    if df > 30:
        z = Z975
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo = max(math.floor(df), 1)
    if lo == df or lo >= 30:
        return T975[lo - 1]
    hi = lo + 1
    w = (1 / lo - 1 / df) / (1 / lo - 1 / hi)
    return T975[lo - 1] + w * (T975[hi - 1] - T975[lo - 1])


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` finite values with its 95% t confidence interval (NaN bounds when ``n`` < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def constant(self) -> bool:
        """Every value the same (deterministic figures on a twin): no spread to show."""
        return self.n >= 1 and self.sd == 0.0


def mean_ci(values: Sequence[float]) -> Estimate:
    """Mean and 95% confidence interval of the finite ``values`` (t distribution, n − 1 degrees of freedom)."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, 0.0)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class Difference:
    """``a − b`` with the 95% Welch confidence interval of the difference; significant when it excludes 0."""

    delta: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        return not (math.isnan(self.lo) or self.lo <= 0.0 <= self.hi)


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Welch's interval for the difference of two means (unequal variances); NaN bounds with fewer than two values
    on a side. Equal constant samples give a zero-width interval at their difference."""
    ea, eb = mean_ci(a), mean_ci(b)
    delta = ea.mean - eb.mean
    if ea.n < 2 or eb.n < 2:
        return Difference(delta, math.nan, math.nan)
    va, vb = ea.sd**2 / ea.n, eb.sd**2 / eb.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(delta, delta, delta)
    df = (va + vb) ** 2 / (va**2 / (ea.n - 1) + vb**2 / (eb.n - 1))
    half = t975(df) * se
    return Difference(delta, delta - half, delta + half)


def best_lr(pairs: Sequence[tuple[float, float]]) -> float:
    """The lr of ``(lr, validation accuracy)`` pairs with the highest mean accuracy over its repeats (failed runs,
    NaN, do not count); ties go to the smaller lr, and with no finite accuracy at all the smallest lr is returned."""
    by_lr: dict[float, list[float]] = {}
    for lr, acc in pairs:
        by_lr.setdefault(lr, []).append(acc)
    means = {lr: mean_ci(accs).mean for lr, accs in by_lr.items()}
    finite = {lr: m for lr, m in means.items() if math.isfinite(m)}
    if not finite:
        return min(by_lr)
    return min(finite, key=lambda lr: (-finite[lr], lr))
