"""The report's figures (matplotlib, PNG): a forest plot of every run's headline Δ to the baseline, overviews
of every run by GRPO epoch with the paired Δ, and one figure of training curves per run (mean and 95% band
over seeds, across all phases, phase boundaries marked). See :mod:`leverjax.report` for the statistics."""
from __future__ import annotations

import math
import os
from typing import Callable

from leverjax.core import stats
from leverjax.report.estimates import estimate, paired_at
from leverjax.report.load import (
    ORACLE_MEAN, REFERENCE_NAMES, Context, Run, _ref_mean, _safe, bounds_of, oracle_shots, scorer_call_rows,
)


def _band(series_by_seed: list[list[tuple[int, str, float]]], bounds=None):
    """x, mean, lower, upper over the seeds' series (aligned by x), the interval clipped to ``bounds``."""
    by_x: dict[int, list[float]] = {}
    for series in series_by_seed:
        for x, _, v in series:
            if v is not None and math.isfinite(v):
                by_x.setdefault(x, []).append(v)
    xs = sorted(by_x)
    means, lo, hi = [], [], []
    for x in xs:
        e = estimate(by_x[x], 1.0, bounds)
        means.append(e.mean)
        lo.append(e.lo if e.has_ci else e.mean)
        hi.append(e.hi if e.has_ci else e.mean)
    return xs, means, lo, hi


def _matplotlib():
    try:
        import matplotlib
        matplotlib.use("Agg")
        # runs that differ by hundredths of a point: the axes show the values, not an offset ("+4.78e1")
        matplotlib.rcParams["axes.formatter.useoffset"] = False
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_plots(ctx: Context) -> tuple[list[tuple[str, str]], str]:
    """PNG figures: the forest plot of the headline Δ, overviews of every run by GRPO epoch (value and paired
    Δ), and one figure of training curves per run (mean and 95% band over seeds, phases marked).
    Returns ([(title, path relative to the results directory)], a message when matplotlib is missing)."""
    plt = _matplotlib()
    if plt is None:
        return [], ("*Plots skipped: matplotlib is not installed (`pip install -r requirements.txt`, then "
                    "`python -m leverjax.report DIR`).*")
    plot_dir = os.path.join(ctx.directory, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    written = []
    if len(ctx.runs) > 1:
        written.append((f"Δ to {ctx.base} on the test split (forest plot)", _forest(plt, plot_dir, ctx)))
    calls = _scorer_calls(plt, plot_dir, ctx)
    if calls:
        written.append(("accuracy against scorer calls", calls))
    delta = ", and Δ to the baseline" if len(ctx.runs) > 1 else ""
    if ctx.oracle:
        written.append((f"all runs: val oracle accuracy by GRPO epoch{delta}",
                        _overview(plt, plot_dir, ctx, ORACLE_MEAN, "val oracle accuracy (%), mean over shots",
                                  100.0)))
    written.append((f"all runs: val expected reward by GRPO epoch{delta}",
                    _overview(plt, plot_dir, ctx, "val_expected_reward", "val expected reward", 1.0)))
    for variant, seeds in ctx.runs.items():
        written.append((f"{variant}: training curves", _curves(plt, plot_dir, ctx, variant, seeds)))
    return [(title, os.path.relpath(p, ctx.directory)) for title, p in written if p], ""


def _forest(plt, plot_dir: str, ctx: Context) -> str:
    panels = _forest_panels(ctx)
    variants = [v for v in ctx.runs if v != ctx.base]
    n = len(variants)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 1.5, 1.6 + 0.55 * n),
                             layout="constrained", squeeze=False)
    colors = {1: "#1a9850", -1: "#d73027", 0: "0.45"}
    for j, (ax, (label, get, scale, bounds, digits)) in enumerate(zip(axes[0], panels)):
        ticks = []
        for i, v in enumerate(variants):
            y = n - 1 - i
            d = ctx.delta(v, get, scale, bounds)
            dagger = j > 0 and v in ctx.other_reward
            color = "0.75" if dagger else colors[d.direction]
            if d.n and math.isfinite(d.mean):
                if d.has_ci:
                    ax.errorbar([d.mean], [y], xerr=[[d.mean - d.lo], [d.hi - d.mean]], fmt="o", color=color,
                                ms=7, capsize=4, lw=2)
                else:
                    ax.plot([d.mean], [y], "o", color=color, ms=7)
            value = d.text(digits, signed=True) if d.n else "—"
            tag = " †" if dagger else ""
            ticks.append(f"{v}{tag}  (n={d.n})\n{value}" if j == 0 else f"{value}{tag}")
        ax.axvline(0.0, color="black", lw=1.0, ls="--")
        ax.set_yticks(range(n - 1, -1, -1), ticks, fontsize=9)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlabel(label, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=9)
    n_min = min((ctx.seeds(v) for v in ctx.runs if ctx.seeds(v)), default=0)
    fig.suptitle(f"Δ to {ctx.base} on the test split: mean and 95% CI paired over seeds"
                 + (f" — only {n_min} seed(s): intervals too wide to conclude" if n_min < stats.MIN_SEEDS_FOR_CLAIMS
                    else "") + "\ngreen / red: the interval lies above / below 0; grey: it contains 0"
                 + (" (or too few seeds)" if n_min < stats.MIN_SEEDS_FOR_CLAIMS else ""), fontsize=10)
    path = os.path.join(plot_dir, "forest.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _scorer_calls(plt, plot_dir: str, ctx: Context) -> str | None:
    """Each run's headline accuracy (mean and 95% CI over seeds) against its scorer calls per seed: the
    labelled trajectories it trained on plus those it scored while training (none without on-policy GRPO)."""
    rows = scorer_call_rows(ctx)
    if not rows:
        return None
    label = ctx.headline()[1]
    fig, ax = plt.subplots(figsize=(8.5, 5.0), layout="constrained")
    for (variant, labels, calls, e), color in zip(rows, _colors(plt, len(rows))):
        x = labels + calls
        err = [[e.mean - e.lo], [e.hi - e.mean]] if e.has_ci else None
        ax.errorbar([x], [e.mean], yerr=err, fmt="o", color=color, ms=7, capsize=4, label=variant)
    ax.set_xscale("log")
    ax.set_xlabel("scorer calls per seed (labelled training trajectories + calls while training), log scale")
    ax.set_ylabel(f"{label}, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title("Accuracy against scorer calls (on real data each call is one VLM generation)", fontsize=10)
    path = os.path.join(plot_dir, "scorer_calls.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _phase_spans(run: Run) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for i, (phase, _) in enumerate(run.ordered_epochs(), 1):
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], i)
        else:
            spans.append((phase, i, i))
    return spans


def _curve_panels(ctx: Context) -> list[tuple[str, str, float]]:
    """(metric, title, scale) of the per-run figure's panels."""
    panels = []
    if ctx.oracle:
        panels.append((ORACLE_MEAN, "val oracle accuracy (%), mean over shots", 100.0))
    panels += [("val_expected_reward", "val expected reward", 1.0), ("val_loss", "val loss", 1.0),
               ("train_kl", "KL to the reference", 1.0), ("train_beta", "β (KL weight)", 1.0),
               ("train_adv_std", "advantage std", 1.0), ("train_zero_var_frac", "zero-variance share", 1.0),
               ("val_changed_vs_ref", "greedy picks changed vs ref", 1.0)]
    if not ctx.oracle:
        panels.insert(1, ("val_top1_reward", "val top-1 reward", 1.0))
    return panels


def _curves(plt, plot_dir: str, ctx: Context, variant: str, seeds: dict[int, Run]) -> str:
    from matplotlib.ticker import MaxNLocator

    panels = _curve_panels(ctx)
    # a fixed layout: "constrained" re-measures every text artist; the schemes report's 19 of these
    # figures took 14.8 s with it, 9.1 s without
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.4))
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.075, top=0.88, wspace=0.22, hspace=0.5)
    longest = max(seeds.values(), key=lambda r: len(r.epochs))
    spans = _phase_spans(longest)
    total = max(len(longest.epochs), 1)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, title, scale) in zip(axes.flat, panels):
        bounds = bounds_of(metric, scale)
        series = [[(x, p, v * scale) for x, p, v in r.series(metric)] for r in seeds.values()]
        xs, mean, lo, hi = _band(series, bounds)
        if xs:
            ax.plot(xs, mean, color="C0", lw=1.6, marker="o" if len(xs) < 12 else None, ms=3, label="mean")
            if len(seeds) > 1:
                ax.fill_between(xs, lo, hi, color="C0", alpha=0.25, lw=0, label="95% CI")
        else:
            why = "\n(no GRPO phase)" if metric.startswith("train_") else " in this run"
            ax.text(0.5, 0.5, f"not logged{why}", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
            ax.set_yticks([])
        if metric == ORACLE_MEAN and ctx.references and xs:
            shots = oracle_shots({k for r in seeds.values() for pe in r.epochs.values() for k in pe})
            for name, style in (("random", ":"), ("similarity", "--"), ("oracle_greedy", "-.")):
                m = _ref_mean(ctx.references, "val", name, shots)
                if m is not None:
                    ax.axhline(100 * m, color="0.35", lw=1.0, ls=style, label=REFERENCE_NAMES[name])
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
        ax.set_xlim(0.5, total + 0.5)  # every panel spans all phases, so the boundaries line up
        for phase, first, last in spans:
            if first > 1:
                ax.axvline(first - 0.5, color="0.55", lw=0.9, ls=":")
            ax.text((first + last) / 2, 1.0, phase, transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=8, color="0.3")
        ax.set_title(title, fontsize=10, pad=14)
        ax.set_xlabel("epoch (all phases)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    n = len(seeds)
    fig.suptitle(f"{variant} — mean over {n} seed{'s' if n != 1 else ''}"
                 + (", band: 95% CI" if n > 1 else "") + "; dotted lines: phase boundaries", fontsize=11)
    path = os.path.join(plot_dir, f"curves_{_safe(variant)}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _colors(plt, n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    order = list(range(10)) if n <= 10 else list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[i % len(order)]) for i in range(n)]


def _overview(plt, plot_dir: str, ctx: Context, metric: str, label: str, scale: float) -> str | None:
    from matplotlib.ticker import MaxNLocator

    runs, base = ctx.runs, ctx.base
    if not any(len(r.grpo_curve(metric)) > 1 for seeds in runs.values() for r in seeds.values()):
        return None  # not logged in this grid, or no run has GRPO epochs: nothing to draw by GRPO epoch
    bounds = bounds_of(metric, scale)
    many = len(runs) > 6  # the seed bands of many runs hide each other: only the paired Δ keeps them
    if len(runs) < 2:  # the baseline alone: no Δ panel, which would be an empty axis
        fig, ax = plt.subplots(1, 1, figsize=(8, 5.5), layout="constrained")
        dax = None
    else:
        fig, (ax, dax) = plt.subplots(1, 2, figsize=(14, 6.5 if many else 5.5), layout="constrained")
    colors = _colors(plt, len(runs))
    curves = {v: {s: {e: x * scale for e, x in r.grpo_curve(metric).items() if x is not None}
                  for s, r in seeds.items()} for v, seeds in runs.items()}
    base_curves = curves.get(base, {})
    for i, (variant, cs) in enumerate(curves.items()):
        xs, mean, lo, hi = _band([[(e, "", v) for e, v in sorted(c.items())] for c in cs.values()], bounds)
        if not xs:
            continue
        style = dict(color="black", lw=2.2, ls="--") if variant == base else dict(color=colors[i], lw=1.4)
        if len(xs) == 1:  # no GRPO: a horizontal line at its last value
            ax.axhline(mean[0], label=f"{variant} (no GRPO)", **style)
        else:
            ax.plot(xs, mean, label=variant, marker="o" if len(xs) < 12 else None, ms=3, **style)
            if len(cs) > 1 and not many:
                ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.12, lw=0)
        if dax is None or variant == base or len(xs) == 1:
            continue
        dx, dm, dlo, dhi = [], [], [], []
        for e in xs:
            diffs = paired_at(cs, base_curves, e)
            if diffs:
                m, h = stats.mean_ci(diffs)
                h = 0.0 if math.isnan(h) else h
                dx.append(e), dm.append(m), dlo.append(m - h), dhi.append(m + h)
        if dx:
            dax.plot(dx, dm, marker="o" if len(dx) < 12 else None, ms=3, **style)
            dax.fill_between(dx, dlo, dhi, color=style["color"], alpha=0.07 if many else 0.15, lw=0)
    seeded = any(len(cs) > 1 for cs in curves.values())  # a band needs two seeds
    ax.set_title(f"{label} (mean" + (", band: 95% CI over seeds)" if seeded and not many else ")"), fontsize=11)
    if dax is not None:
        dax.axhline(0.0, color="black", lw=1.0, ls="--")
        dax.set_title(f"Δ to {base} on the same seeds" + (" (band: paired 95% CI)" if seeded else ""), fontsize=11)
        dax.set_ylabel(f"Δ {label}")
    for a in [a for a in (ax, dax) if a is not None]:
        a.set_xlabel("GRPO epoch (0 = before GRPO)")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    ax.set_ylabel(label)
    if ax.get_legend_handles_labels()[0]:  # nothing is drawn when every run failed before GRPO
        fig.legend(loc="outside lower center", ncol=min(5, max(1, len(runs))), fontsize=8, frameon=False)
    path = os.path.join(plot_dir, f"overview_{metric}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _forest_panels(ctx: Context) -> list[tuple[str, Callable[[Run], float | None], float, tuple | None, int]]:
    """(x label, getter, scale, bounds, digits) of each panel of the forest plot."""
    key, label, scale, bounds, get, unit = ctx.headline()
    panels = [(f"Δ {label}" + (" (percentage points)" if ctx.oracle else ""), get, scale, bounds,
               2 if ctx.oracle else 3)]
    second = "test_expected_reward" if ctx.oracle else "test_top1_reward"
    if any(second in r.final for s in ctx.runs.values() for r in s.values()):
        panels.append((f"Δ test {'expected' if ctx.oracle else 'top-1'} reward", lambda r: r.final.get(second),
                       1.0, None, 3))
    return panels
