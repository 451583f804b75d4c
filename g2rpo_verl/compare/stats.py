"""Intervals over seeds: the mean with a Student-t 95 % interval, and paired differences.

With a handful of seeds the sampling distribution of a mean is not normal-enough for ±1.96·SE;
the t interval ``mean ± t_{0.975, n−1} · s / √n`` (``s`` the sample standard deviation) is
exact for normal per-seed values and the usual choice for few replicates. Paired differences
compare two arms *seed by seed* (same model, data and prompts per seed), which removes the
between-seed variance both arms share; their interval is the t interval of the differences.
Nothing is reported for ``n < 2`` beyond the value itself (no interval exists).

Minimum detectable difference (MDE) at power ``1 − β`` and two-sided level α for ``n`` seeds:
the true difference a t test of these seeds would detect with probability ``1 − β``,

    MDE = (t_{1−α/2, ν} + t_{1−β, ν}) · s · √(k / n)

paired (``s`` = SD of the seed-by-seed differences, ``k = 1``, ν = n − 1) or, for an arm without
a partner, two independent arms of ``n`` seeds with this arm's SD (``k = 2``, ν = 2(n − 1)).
It uses the observed SD as if it were the true one (the usual planning approximation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy import stats

__all__ = ["LEVEL", "POWER", "Interval", "t_interval", "paired_difference", "minimum_detectable_difference"]

#: Confidence level of every interval in the comparison report.
LEVEL = 0.95
#: Power of the minimum detectable differences in the report.
POWER = 0.8


@dataclass(frozen=True)
class Interval:
    """``mean`` of ``n`` values with its ``LEVEL`` t interval ``[low, high]`` (NaN for n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...]

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (never for n < 2)."""
        return bool(self.n >= 2 and (self.low > 0 or self.high < 0))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["values"] = list(self.values)
        return d

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "—"
        if self.n < 2 or math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and two-sided t interval of ``values`` (finite numbers)."""
    xs = tuple(float(v) for v in values)
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, xs)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, xs)


def paired_difference(arm: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL) -> Interval:
    """t interval of ``arm[s] − baseline[s]`` over the seeds ``s`` both have."""
    seeds = sorted(set(arm) & set(baseline))
    return t_interval([arm[s] - baseline[s] for s in seeds], level)


def minimum_detectable_difference(
    values: Sequence[float], paired: bool = True, level: float = LEVEL, power: float = POWER
) -> float:
    """MDE (module docstring) from per-seed ``values``: paired differences, or one arm's values
    (``paired=False``: two independent arms of that size and spread). NaN for fewer than 2 values."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    df, k = (n - 1, 1.0) if paired else (2 * (n - 1), 2.0)
    t_sum = float(stats.t.ppf(0.5 + level / 2, df=df)) + float(stats.t.ppf(power, df=df))
    return t_sum * sd * math.sqrt(k / n)
