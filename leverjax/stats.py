"""Mean and 95% confidence interval over seeds (Student's t from ``scipy.stats``)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from scipy import stats as _scipy_stats


def t_critical(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (NaN for df < 1)."""
    return float(_scipy_stats.t.ppf(0.975, df)) if df >= 1 else math.nan


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half_width)`` of the 95% CI of the mean; NaN values are ignored, one value gives ±NaN."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t_critical(n - 1) * sd / math.sqrt(n)


def format_ci(mean: float, half: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "nan"
    if math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


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
