"""Estimates over seeds: a mean with its 95% interval, paired differences to a baseline, and values held
at an epoch (Student's t over seeds, :mod:`leverjax.core.stats`)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from leverjax.core import stats


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95% t interval (half width ``half``), clipped to ``bounds`` if any."""

    mean: float
    half: float
    n: int
    bounds: tuple[float, float] | None = None

    @property
    def lo(self) -> float:
        return max(self.bounds[0], self.mean - self.half) if self.bounds else self.mean - self.half

    @property
    def hi(self) -> float:
        return min(self.bounds[1], self.mean + self.half) if self.bounds else self.mean + self.half

    @property
    def has_ci(self) -> bool:
        return math.isfinite(self.half)

    @property
    def clipped(self) -> bool:
        return bool(self.bounds) and self.has_ci and (self.mean - self.half < self.bounds[0]
                                                      or self.mean + self.half > self.bounds[1])

    @property
    def conclusive(self) -> bool:
        """Enough seeds to call a difference (:data:`stats.MIN_SEEDS_FOR_CLAIMS`)."""
        return self.has_ci and self.n >= stats.MIN_SEEDS_FOR_CLAIMS

    @property
    def direction(self) -> int:
        """+1 / −1 when the interval lies above / below 0 (with enough seeds), else 0."""
        if not self.conclusive:
            return 0
        return 1 if self.lo > 0 else -1 if self.hi < 0 else 0

    def decimals(self, default: int) -> int:
        """Two significant digits of the half width, at most two places finer than ``default`` (a tiny or
        zero interval does not print a wall of zeros)."""
        return min(stats.decimals(self.half, default), default + 2)

    def text(self, default: int = 3, signed: bool = False, star: bool = False) -> str:
        """``m ± h`` (``m [lo, hi]`` when clipped; ``m`` with one seed; ``—`` with none); ``star`` adds
        `` *`` to a Δ whose interval excludes 0, when there are enough seeds."""
        if math.isnan(self.mean):
            return "—"
        d = self.decimals(default)
        sign = "+" if signed else ""
        out = f"{_unsigned_zero(self.mean, d):{sign}.{d}f}"
        if self.clipped:
            out += f" [{self.lo:{sign}.{d}f}, {self.hi:{sign}.{d}f}]"
        elif self.has_ci:
            out += f" ± {self.half:.{d}f}"
        if star and self.direction:
            out += " *"
        return out

    def interval_text(self, default: int = 3, unit: str = "") -> str:
        d = self.decimals(default)
        if not self.has_ci:
            return "no CI (one seed)"
        return f"95% CI {_unsigned_zero(self.lo, d):+.{d}f} to {_unsigned_zero(self.hi, d):+.{d}f}{unit}"


def _unsigned_zero(x: float, digits: int) -> float:
    """``x``, or +0.0 when it rounds to zero at ``digits`` places (no "−0.00")."""
    return 0.0 if round(x, digits) == 0 else x


def estimate(values: Sequence[float | None], scale: float = 1.0, bounds=None) -> Estimate:
    xs = [v * scale for v in values if v is not None and math.isfinite(v)]
    mean, half = stats.mean_ci(xs)
    return Estimate(mean, half, len(xs), bounds)


def paired_diffs(runs: dict[int, Any], base: dict[int, Any], get: Callable[[Any], float | None],
                 scale: float = 1.0, base_get: Callable[[Any], float | None] | None = None) -> list[float]:
    """Per seed both have: ``(get(run) − base_get(baseline run)) · scale`` (``base_get`` defaults to ``get``)."""
    diffs = []
    for seed in sorted(set(runs) & set(base)):
        a, b = get(runs[seed]), (base_get or get)(base[seed])
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            diffs.append((a - b) * scale)
    return diffs


def paired(runs: dict[int, Any], base: dict[int, Any], get: Callable[[Any], float | None], scale: float = 1.0,
           bounds=None) -> Estimate:
    """The paired Δ over the seeds both have (``bounds``: the range of the metric, so Δ ∈ [−hi, hi])."""
    diffs = paired_diffs(runs, base, get, scale)
    mean, half = stats.mean_ci(diffs)
    return Estimate(mean, half, len(diffs), (-bounds[1], bounds[1]) if bounds else None)


def _mean(values) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def equal_epoch_columns(max_epochs: Sequence[int]) -> list[int]:
    """GRPO epochs shown side by side: 0 (before GRPO), 1–5, then 10, 20, 50, 100, ..., and every run's last."""
    top = max(max_epochs) if max_epochs else 0
    cols = set(range(0, min(top, 5) + 1))
    step = 10
    while step <= top:
        for mult in (1, 2, 5):
            if mult * step <= top:
                cols.add(mult * step)
        step *= 10
    cols.update(e for e in max_epochs if e)
    return sorted(cols)


def held(curve: dict[int, float], epoch: int) -> float | None:
    """``curve`` at ``epoch``, or at its last epoch before it (a shorter run is held at its last value)."""
    if epoch in curve:
        return curve[epoch]
    earlier = [k for k in curve if k <= epoch]
    return curve[max(earlier)] if earlier else None


def paired_at(curves: dict[int, dict], base_curves: dict[int, dict], epoch: int, scale: float = 1.0) -> list[float]:
    """Per seed (both have), the run's value at GRPO ``epoch`` minus the baseline's (held at its last epoch)."""
    return paired_diffs(curves, base_curves, lambda c: c.get(epoch), scale, lambda c: held(c, epoch))
