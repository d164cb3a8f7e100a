"""Mean and 95% confidence interval over seeds, bounded intervals for proportions, and CI-driven rounding.

Seeds are the replicates: every interval is Student's t interval of the mean of per-seed values
(quantiles from SciPy). A proportion (an accuracy, a share of queries) cannot leave [0, 1], but a t interval
over few seeds can; :func:`bounded_ci` clips the interval to the metric's range and says when it did.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from scipy.special import stdtrit  # the inverse CDF of Student's t (scipy.stats.t.ppf), a lighter import

CONFIDENCE = 0.95
MIN_SEEDS_FOR_CLAIMS = 3  # with fewer seeds a t interval is too wide (t_{0.975,1} = 12.7) to conclude


def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided ``confidence`` quantile of Student's t with ``df`` degrees of freedom (NaN for df < 1)."""
    if df < 1:
        return math.nan
    return float(stdtrit(df, 0.5 + confidence / 2))


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half_width)`` of the 95% t interval of the mean; non-finite values are ignored, one value
    gives ±NaN, none gives (NaN, NaN)."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t_critical(n - 1) * sd / math.sqrt(n)


def bounded_ci(values: Sequence[float], low: float = 0.0, high: float = 1.0) -> tuple[float, float, float]:
    """``(mean, lower, upper)``: the 95% t interval of the mean clipped to ``[low, high]`` (the range of a
    proportion, or of a difference of proportions with ``low = −high``). One value: lower = upper = NaN."""
    mean, half = mean_ci(values)
    if math.isnan(mean) or math.isnan(half):
        return mean, math.nan, math.nan
    return mean, max(low, mean - half), min(high, mean + half)


def decimals(half: float, default: int = 4, significant: int = 2) -> int:
    """Decimal places that show ``half`` (a CI half width) to ``significant`` digits; the mean is printed
    to the same place. ``default`` when there is no interval (one seed) or it is 0."""
    if half is None or not math.isfinite(half) or half <= 0:
        return default
    return int(min(6, max(0, significant - 1 - math.floor(math.log10(half)))))


def format_ci(mean: float, half: float, digits: int | None = None) -> str:
    """``"m ± h"`` rounded to the CI's precision (``digits`` forces the decimal places); ``"m"`` without a CI."""
    if math.isnan(mean):
        return "nan"
    d = decimals(half) if digits is None else digits
    if math.isnan(half):
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f} ± {half:.{d}f}"


def summarize(records: Sequence[Mapping], by: str) -> dict:
    """``{records[by]: {metric: [mean, 95% CI half width]}}`` over the records that share ``by`` (e.g. the
    seeds of one variant); every numeric field but ``seed`` is a metric."""
    groups: dict[str, list[Mapping]] = {}
    for rec in records:
        groups.setdefault(rec[by], []).append(rec)
    out = {}
    for key, recs in groups.items():
        metrics = [k for k, v in recs[0].items() if k != "seed" and isinstance(v, (int, float))
                   and not isinstance(v, bool)]
        out[key] = {k: list(mean_ci([r[k] for r in recs])) for k in metrics}
    return out
