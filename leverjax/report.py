"""The grid report: ``report.md`` and ``plots/*.png`` from a results directory's ``metrics.csv``.

    python -m leverjax.report results/all [--baseline=rce_only] [--no_plots]

Everything is recomputed from the CSV (and the ``status/`` files, for the reasons runs failed), so the
report can be regenerated at any time, e.g. with another baseline. A *run* here is a variant (experiment
plus sweep values); its seeds are replicates. Every ``±`` is the half width of a 95% confidence interval
over seeds (Student's t, :mod:`leverjax.stats`); a Δ is paired: for each seed, the run's value minus the
baseline's value on the same seed, then the mean and CI of those differences.

Sections: the researchers' table (oracle accuracy at shots 1–4 on synthetic data, expected reward on real
data) with Δ to the baseline; final and best-epoch test metrics; a comparison at equal GRPO epochs on
val; the training curves (PNG, matplotlib; without matplotlib the tables are still written); failed runs.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import json
import math
import os
import re
import sys
import time
from typing import Callable, Sequence

from leverjax import stats
from leverjax.fileio import write_text_atomic

PHASE_ORDER = ("sft", "rce", "grpo_positive", "grpo")
CURVE_METRICS = (("val_expected_reward", "val expected reward"), ("train_kl", "KL"), ("train_beta", "β"),
                 ("train_adv_std", "advantage std"), ("train_zero_var_frac", "zero-variance share"),
                 ("val_changed_vs_ref", "greedy picks changed vs ref"))
_TABLE_METRICS = (("loss", "loss", 1.0), ("expected_reward", "E[r]", 1.0), ("top1_reward", "top-1 r", 1.0),
                  ("greedy_labelled", "labelled", 1.0), ("changed_vs_ref", "changed", 1.0),
                  ("redundancy", "redund.", 1.0), ("oracle_acc_1", "acc@1 %", 100.0),
                  ("oracle_acc_2", "acc@2 %", 100.0), ("oracle_acc_3", "acc@3 %", 100.0),
                  ("oracle_acc_4", "acc@4 %", 100.0))


def is_grpo(phase: str) -> bool:
    return phase.startswith("grpo")


@dataclasses.dataclass
class Run:
    """One seed of one variant: its per-epoch records and final test metrics."""

    variant: str
    experiment: str
    seed: int
    group: str
    overrides: str
    epochs: dict = dataclasses.field(default_factory=dict)  # (phase, epoch) -> {metric: value}
    final: dict = dataclasses.field(default_factory=dict)  # metric -> value

    def ordered_epochs(self) -> list[tuple[str, int]]:
        rank = {p: i for i, p in enumerate(PHASE_ORDER)}
        return sorted(self.epochs, key=lambda pe: (rank.get(pe[0], len(rank)), pe[0], pe[1]))

    def series(self, metric: str) -> list[tuple[int, str, float]]:
        """``(global epoch, phase, value)`` of ``metric`` over every epoch that has it."""
        return [(i + 1, pe[0], self.epochs[pe][metric]) for i, pe in enumerate(self.ordered_epochs())
                if metric in self.epochs[pe]]

    def grpo_curve(self, metric: str) -> dict[int, float]:
        """``metric`` by GRPO epoch: 0 is the last epoch before GRPO, then 1, 2, ... across GRPO phases."""
        out, n = {}, 0
        for pe in self.ordered_epochs():
            if metric not in self.epochs[pe]:
                continue
            if is_grpo(pe[0]):
                n += 1
                out[n] = self.epochs[pe][metric]
            elif n == 0:
                out[0] = self.epochs[pe][metric]
        return out


def load_runs(csv_path: str) -> dict[str, dict[int, Run]]:
    """variant -> seed -> :class:`Run`, in the CSV's order of first appearance."""
    runs: dict[str, dict[int, Run]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            seed = int(row["seed"])
            run = runs.setdefault(row["run"], {}).get(seed)
            if run is None:
                run = Run(row["run"], row["experiment"], seed, row["group"], row.get("overrides", ""))
                runs[row["run"]][seed] = run
            value = float(row["value"])
            if row["phase"] == "final":
                run.final[row["metric"]] = value
            else:
                run.epochs.setdefault((row["phase"], int(row["epoch"])), {})[row["metric"]] = value
    return runs


REWARD_FIELDS = ("reward_mode", "w_hard", "w_soft", "w_rel")


def load_reward_definitions(directory: str) -> dict[str, tuple]:
    """variant -> its reward definition (mode and weights), from ``grid.json`` when it is there."""
    try:
        with open(os.path.join(directory, "grid.json")) as f:
            grid = json.load(f)
    except (OSError, ValueError):
        return {}
    out = {}
    for run in grid.get("runs", []):
        if run.get("config"):
            out.setdefault(run["variant"], tuple(run["config"].get(k) for k in REWARD_FIELDS))
    return out


def load_failures(directory: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "status", "*.json"))):
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            continue
        if st.get("state") == "failed":
            out.append(st)
    grid_path = os.path.join(directory, "grid.json")
    if out and os.path.exists(grid_path):  # only the current grid's runs
        try:
            with open(grid_path) as f:
                names = {r["name"]: r["config_hash"] for r in json.load(f)["runs"]}
            out = [s for s in out if names.get(s.get("run")) == s.get("config_hash")]
        except (OSError, ValueError, KeyError):
            pass
    return out


# -- numbers ---------------------------------------------------------------------------------------


def ci(values: Sequence[float], scale: float = 1.0) -> tuple[float, float, int]:
    """``(mean, half width, n)`` of the finite values, scaled."""
    xs = [v * scale for v in values if v is not None and math.isfinite(v)]
    mean, half = stats.mean_ci(xs)
    return mean, half, len(xs)


def fmt_ci(mean: float, half: float, digits: int = 4, signed: bool = False) -> str:
    """``"m ± h"`` (``"m"`` for one seed, ``"—"`` for none); ``signed`` adds a ``+`` and a ``*`` when the
    CI excludes 0."""
    if math.isnan(mean):
        return "—"
    sign = "+" if signed else ""
    text = f"{mean:{sign}.{digits}f}"
    if not math.isnan(half):
        text += f" ± {half:.{digits}f}"
        if signed and abs(mean) > half:
            text += " *"
    return text


def paired(runs: dict[int, Run], base: dict[int, Run], get: Callable[[Run], float | None],
           scale: float = 1.0) -> tuple[float, float, int]:
    """Mean and CI over the seeds both have of ``get(run) − get(baseline run)``."""
    diffs = []
    for seed in sorted(set(runs) & set(base)):
        a, b = get(runs[seed]), get(base[seed])
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            diffs.append((a - b) * scale)
    mean, half = stats.mean_ci(diffs)
    return mean, half, len(diffs)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns are left-aligned (names), the others right (numbers)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")


def choose_baseline(runs: dict[str, dict[int, Run]], requested: str | None) -> str | None:
    if not runs:
        return None
    def of_experiment(name: str) -> list[str]:
        return [v for v in runs if next(iter(runs[v].values())).experiment == name]

    if requested:
        if requested in runs:
            return requested
        if of_experiment(requested):  # an experiment with a sweep: its first variant
            return of_experiment(requested)[0]
        raise ValueError(f"baseline {requested!r} is not a run of this grid; runs: {', '.join(runs)}")
    return (of_experiment("rce_only") or list(runs))[0]


# -- the report ------------------------------------------------------------------------------------


def final_splits(directory: str) -> set:
    """The splits the final metrics of the grid's groups come from (``runs/*/results.json``)."""
    out = set()
    runs_dir = os.path.join(directory, "runs")
    for group in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        try:
            with open(os.path.join(runs_dir, group, "results.json")) as f:
                out.add(json.load(f).get("final_split", "test"))
        except (OSError, ValueError):
            continue
    return out


def build_report(directory: str, baseline: str | None = None, plots: bool = True,
                 printer: Callable[[str], None] | None = None) -> tuple[str, list[str]]:
    """The Markdown text of the report of ``directory`` and the plot files written (relative paths)."""
    runs = load_runs(os.path.join(directory, "metrics.csv"))
    failures = load_failures(directory)
    base = choose_baseline(runs, baseline)
    finals = {m for seeds in runs.values() for r in seeds.values() for m in r.final}
    oracle = any(m.startswith("test_oracle_acc_") for m in finals)
    seeds_all = sorted({s for seeds in runs.values() for s in seeds})
    out = [f"# Grid report: `{os.path.basename(os.path.abspath(directory))}`", ""]
    out.append(f"{len(runs)} run(s) × seeds {_seed_text(seeds_all)} = "
               f"{sum(len(s) for s in runs.values())} trained run(s)"
               + (f", {len(failures)} failed (see the end)" if failures else "")
               + f". Generated {time.strftime('%Y-%m-%d %H:%M')} from `metrics.csv` by `python -m leverjax.report`.")
    out.append("")
    out.append("Every ± is a 95% confidence interval over seeds (Student's t). A Δ is the paired difference to "
               f"the baseline **{base}** on the same seeds (mean ± 95% CI of the per-seed differences); `*` marks "
               "a Δ whose interval excludes 0. Test split unless a section says otherwise.")
    out.append("")
    splits = final_splits(directory)
    if splits - {"test"}:
        out += [f"**Final metrics are not all on a test split**: the data of some groups has no test queries, and "
                f"their final evaluation (the `test_*` metrics below) uses: {', '.join(sorted(map(str, splits)))}.",
                ""]
    if not runs:
        out.append("No finished run yet.")
        return "\n".join(out) + "\n", []

    rewards = load_reward_definitions(directory)
    other = {v for v in runs if base in rewards and v in rewards and rewards[v] != rewards[base]}
    if other:
        out += [f"† marks runs whose reward (mode or weights) differs from **{base}**'s: their expected and "
                "top-1 rewards are on another scale and their Δ in reward is not a comparison of policies "
                "(accuracies are comparable).", ""]
    out += _headline(runs, base, oracle, other)
    out += _final_tables(runs, other)
    out += _equal_epochs(runs, base, oracle, other)
    written: list[str] = []
    if plots:
        written, message = write_plots(directory, runs, base)
        out += ["## Training curves", ""]
        if message:
            out += [message, ""]
        for title, path in written:
            out += [f"### {title}", "", f"![{title}]({path})", ""]
    if failures:
        out += ["## Failed runs", ""]
        rows = [[s.get("variant", s.get("run")), s.get("seed", ""), s.get("kind", ""),
                 (s.get("reason") or "").replace("|", "/").replace("\n", " ")[:300]] for s in failures]
        out += [_md_table(["run", "seed", "kind", "reason"], rows, left=4), ""]
    return "\n".join(out) + "\n", written


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _name(variant: str, other: set, dagger: bool = True) -> str:
    return f"{variant} †" if dagger and variant in other else variant


def _headline(runs, base, oracle, other=frozenset()) -> list[str]:
    if oracle:
        metrics = [(f"test_oracle_acc_{n}", f"acc@{n}") for n in range(1, 5)]
        metrics = [m for m in metrics if any(m[0] in r.final for s in runs.values() for r in s.values())]
        scale, digits = 100.0, 2
        title = ("## The researchers' table: oracle accuracy (%) of the greedy 1–4-shot selections "
                 "(test split, final parameters)")
        note = ("Exact expected VQA accuracy under the synthetic ground truth. Δ mean: per seed, the run's "
                "mean over shots minus the baseline's, then the CI.")
    else:
        metrics = [("test_expected_reward", "E[r]"), ("test_top1_reward", "top-1 reward")]
        scale, digits = 1.0, 4
        title = "## The researchers' table: expected reward (test split, final parameters)"
        note = ("Real data: expected reward of the policy over the labelled trajectories, and the reward of "
                "the trajectory it ranks first.")
    header = ["run", "n"] + [label for _, label in metrics] + [f"Δ {label}" for _, label in metrics] + ["Δ mean"]
    rows = []
    base_runs = runs.get(base, {})
    for variant, seeds in runs.items():
        finished = {s: r for s, r in seeds.items() if r.final}
        row = [f"**{variant}**" if variant == base else _name(variant, other, not oracle), str(len(finished))]
        for m, _ in metrics:
            mean, half, _ = ci([r.final.get(m) for r in finished.values()], scale)
            row.append(fmt_ci(mean, half, digits))
        for m, _ in metrics:
            if variant == base:
                row.append("—")
                continue
            mean, half, _ = paired(finished, base_runs, lambda r, m=m: r.final.get(m), scale)
            row.append(fmt_ci(mean, half, digits, signed=True))
        if variant == base:
            row.append("—")
        else:
            avg = lambda r: _mean([r.final.get(m) for m, _ in metrics])  # noqa: E731
            mean, half, _ = paired(finished, base_runs, avg, scale)
            row.append(fmt_ci(mean, half, digits, signed=True))
        rows.append(row)
    return [title, "", note, "", _md_table(header, rows), ""]


def _mean(values) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def _final_tables(runs, other=frozenset()) -> list[str]:
    out = []
    present = {m for s in runs.values() for r in s.values() for m in r.final}
    for prefix, title in (("test_", "final parameters"),
                          ("best_test_", "best-epoch parameters (by the config's best_metric on val)")):
        metrics = [(m, label, scale) for m, label, scale in _TABLE_METRICS if prefix + m in present]
        if not metrics:
            continue
        rows = []
        for variant, seeds in runs.items():
            finished = [r for r in seeds.values() if r.final]
            row = [_name(variant, other), str(len(finished))]
            for m, _, scale in metrics:
                mean, half, _ = ci([r.final.get(prefix + m) for r in finished], scale)
                row.append(fmt_ci(mean, half, 2 if scale != 1.0 else 4))
            rows.append(row)
        out += [f"## Test metrics, {title}", "", _md_table(["run", "n"] + [label for _, label, _ in metrics], rows), ""]
    return out


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


def _equal_epochs(runs, base, oracle, other=frozenset()) -> list[str]:
    metrics = [("val_expected_reward", "val expected reward", 1.0, 4)]
    shots = sorted(int(m.rsplit("_", 1)[1]) for seeds in runs.values() for r in seeds.values()
                   for pe in r.epochs.values() for m in pe if m.startswith("val_oracle_acc_"))
    if oracle and shots:
        metrics.append(("val_oracle_acc_mean", f"val oracle accuracy (%), mean over shots 1–{shots[-1]}", 100.0, 2))
    out = ["## Comparison at equal epochs (validation split)", "",
           "Each run's validation metric after the same number of GRPO epochs (0 = the last epoch before "
           "GRPO; `grpo_positive` epochs count first). The Δ table compares with the baseline at the same "
           "epoch; a baseline with fewer GRPO epochs is held at its last one.", ""]

    for metric, label, scale, digits in metrics:
        curves = {v: {s: metric_curve(r, metric) for s, r in seeds.items()} for v, seeds in runs.items()}
        last = {v: max((max(c) for c in cs.values() if c), default=0) for v, cs in curves.items()}
        cols = equal_epoch_columns(list(last.values()))
        rows, deltas = [], []
        base_curves = curves.get(base, {})
        for variant, cs in curves.items():
            name = _name(variant, other, metric != "val_oracle_acc_mean")
            row, drow = [name], [name]
            for e in cols:
                vals = [c.get(e) for c in cs.values() if e in c]
                mean, half, _ = ci(vals, scale)
                row.append(fmt_ci(mean, half, digits) if vals else "")
                if variant == base or e > last[variant]:
                    drow.append("—" if variant == base else "")
                    continue
                diffs = paired_at(cs, base_curves, e, scale)
                mean, half = stats.mean_ci(diffs)
                drow.append(fmt_ci(mean, half, digits, signed=True) if diffs else "")
            rows.append(row)
            deltas.append(drow)
        header = ["run"] + [("before GRPO" if e == 0 else f"GRPO {e}") for e in cols]
        out += [f"### {label}", "", _md_table(header, rows), "",
                f"Δ to **{base}**:", "", _md_table(header, deltas), ""]
    return out


def metric_curve(run: Run, metric: str) -> dict[int, float]:
    """``run.grpo_curve(metric)``; ``val_oracle_acc_mean`` is the mean over the logged shots."""
    if metric == "val_oracle_acc_mean":
        curves = [c for c in (run.grpo_curve(f"val_oracle_acc_{n}") for n in range(1, 5)) if c]
        keys = set().union(*curves) if curves else set()
        return {e: _mean([c.get(e) for c in curves]) for e in keys}
    return run.grpo_curve(metric)


def held(curve: dict[int, float], epoch: int) -> float | None:
    """``curve`` at ``epoch``, or at its last epoch before it (a shorter run is held at its last value)."""
    if epoch in curve:
        return curve[epoch]
    earlier = [k for k in curve if k <= epoch]
    return curve[max(earlier)] if earlier else None


def paired_at(curves: dict[int, dict], base_curves: dict[int, dict], epoch: int, scale: float = 1.0) -> list[float]:
    """Per seed (both have), the run's value at GRPO ``epoch`` minus the baseline's (held at its last epoch)."""
    diffs = []
    for seed in sorted(set(curves) & set(base_curves)):
        a, b = curves[seed].get(epoch), held(base_curves[seed], epoch)
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b):
            diffs.append((a - b) * scale)
    return diffs


# -- plots -----------------------------------------------------------------------------------------


def _band(series_by_seed: list[list[tuple[int, str, float]]]):
    """x, mean, lower, upper over the seeds' series (aligned by global epoch)."""
    by_x: dict[int, list[float]] = {}
    for series in series_by_seed:
        for x, _, v in series:
            if math.isfinite(v):
                by_x.setdefault(x, []).append(v)
    xs = sorted(by_x)
    means, lo, hi = [], [], []
    for x in xs:
        mean, half = stats.mean_ci(by_x[x])
        half = 0.0 if math.isnan(half) else half
        means.append(mean)
        lo.append(mean - half)
        hi.append(mean + half)
    return xs, means, lo, hi


def write_plots(directory: str, runs: dict[str, dict[int, Run]], base: str | None
                ) -> tuple[list[tuple[str, str]], str]:
    """PNG training curves: one figure per run (six panels, mean and 95% CI band over seeds) and an
    overview of every run's val expected reward by GRPO epoch and its paired Δ to the baseline.
    Returns ([(title, path relative to ``directory``)], a message when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], ("*Plots skipped: matplotlib is not installed (`pip install matplotlib`, then "
                    "`python -m leverjax.report DIR`).*")
    plot_dir = os.path.join(directory, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    written = []
    oracle = any(m.startswith("val_oracle_acc_") for s in runs.values() for r in s.values()
                 for pe in r.epochs.values() for m in pe)
    if oracle:
        written.append(("all runs: val oracle accuracy by GRPO epoch, and Δ to the baseline",
                        _overview(plt, plot_dir, runs, base, "val_oracle_acc_mean",
                                  "val oracle accuracy (%), mean over shots", 100.0)))
    written.append(("all runs: val expected reward by GRPO epoch, and Δ to the baseline",
                    _overview(plt, plot_dir, runs, base, "val_expected_reward", "val expected reward", 1.0)))
    for variant, seeds in runs.items():
        written.append((variant, _curves(plt, plot_dir, variant, seeds)))
    return [(title, os.path.relpath(p, directory)) for title, p in written], ""


def _phase_spans(run: Run) -> list[tuple[str, int, int]]:
    spans: list[tuple[str, int, int]] = []
    for i, (phase, _) in enumerate(run.ordered_epochs(), 1):
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], i)
        else:
            spans.append((phase, i, i))
    return spans


def _curves(plt, plot_dir: str, variant: str, seeds: dict[int, Run]) -> str:
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    longest = max(seeds.values(), key=lambda r: len(r.epochs))
    spans = _phase_spans(longest)
    for ax, (metric, title) in zip(axes.flat, CURVE_METRICS):
        xs, mean, lo, hi = _band([r.series(metric) for r in seeds.values()])
        if xs:
            ax.plot(xs, mean, color="C0", lw=1.6, marker="o" if len(xs) < 12 else None, ms=3)
            if len(seeds) > 1:
                ax.fill_between(xs, lo, hi, color="C0", alpha=0.25, lw=0)
            x_lo, x_hi = min(xs), max(xs)
        else:
            ax.text(0.5, 0.5, "not logged in these phases", ha="center", va="center", transform=ax.transAxes,
                    color="0.5")
            x_lo, x_hi = 1, max(2, spans[-1][2] if spans else 2)
        for phase, start, end in spans:
            if end < x_lo or start > x_hi:
                continue
            ax.axvline(start - 0.5, color="0.7", lw=0.8, ls=":")
            ax.text((max(start, x_lo) + min(end, x_hi)) / 2, 1.0, phase, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="0.4")
        ax.set_title(title, fontsize=10, pad=14)
        ax.set_xlabel("epoch (all phases)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    n = len(seeds)
    fig.suptitle(f"{variant} — mean over {n} seed{'s' if n != 1 else ''}"
                 + (", band: 95% CI" if n > 1 else ""), fontsize=11)
    path = os.path.join(plot_dir, f"curves_{_safe(variant)}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _colors(plt, n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    order = list(range(10)) if n <= 10 else list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[i % len(order)]) for i in range(n)]


def _overview(plt, plot_dir: str, runs: dict[str, dict[int, Run]], base: str | None, metric: str, label: str,
              scale: float) -> str:
    from matplotlib.ticker import MaxNLocator

    many = len(runs) > 6  # the seed bands of many runs hide each other: only the paired Δ keeps them
    fig, (ax, dax) = plt.subplots(1, 2, figsize=(14, 6.5 if many else 5.5), layout="constrained")
    colors = _colors(plt, len(runs))
    curves = {v: {s: {e: x * scale for e, x in metric_curve(r, metric).items() if x is not None}
                  for s, r in seeds.items()} for v, seeds in runs.items()}
    base_curves = curves.get(base, {})
    for i, (variant, cs) in enumerate(curves.items()):
        xs, mean, lo, hi = _band([[(e, "", v) for e, v in sorted(c.items())] for c in cs.values()])
        if not xs:
            continue
        style = dict(color="black", lw=2.2, ls="--") if variant == base else dict(color=colors[i], lw=1.4)
        if len(xs) == 1:  # no GRPO: a horizontal line at its last value
            ax.axhline(mean[0], label=f"{variant} (no GRPO)", **style)
        else:
            ax.plot(xs, mean, label=variant, marker="o" if len(xs) < 12 else None, ms=3, **style)
            if len(cs) > 1 and not many:
                ax.fill_between(xs, lo, hi, color=style["color"], alpha=0.12, lw=0)
        if variant == base or len(xs) == 1:
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
    dax.axhline(0.0, color="black", lw=1.0, ls="--")
    ax.set_title(f"{label} (mean" + (")" if many else ", band: 95% CI over seeds)"), fontsize=11)
    dax.set_title(f"Δ to {base} on the same seeds (band: paired 95% CI)", fontsize=11)
    for a in (ax, dax):
        a.set_xlabel("GRPO epoch (0 = before GRPO)")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    ax.set_ylabel(label)
    fig.legend(loc="outside lower center", ncol=min(5, max(1, len(runs))), fontsize=8, frameon=False)
    path = os.path.join(plot_dir, f"overview_{metric}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(directory: str, baseline: str | None = None, plots: bool = True,
                 printer: Callable[[str], None] | None = None) -> str:
    """Writes ``directory/report.md`` (and ``plots/``) atomically; returns its path."""
    text, _ = build_report(directory, baseline=baseline, plots=plots, printer=printer)
    path = os.path.join(directory, "report.md")
    write_text_atomic(path, text)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leverjax.report",
                                     description="Regenerate report.md and plots/ from a grid's metrics.csv.")
    parser.add_argument("directory", help="a results directory written by the launcher (run.py --experiment=a,b)")
    parser.add_argument("--baseline", default=None, help="run (or experiment) the Δ columns compare with "
                        "(default: rce_only if present, else the first run)")
    parser.add_argument("--no_plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    csv_path = os.path.join(args.directory, "metrics.csv")
    if not os.path.exists(csv_path):
        print(f"error: {csv_path} does not exist (is {args.directory} a launcher results directory?)", file=sys.stderr)
        return 2
    try:
        path = write_report(args.directory, baseline=args.baseline, plots=not args.no_plots)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
