"""Which offline metric predicts accuracy: offline metrics checked against the oracle of synthetic data.

On real data there is no oracle: a researcher picks the best epoch and compares runs by offline metrics
(validation loss, expected reward and top-1 reward over the labelled trajectories, the labelled share of
the greedy picks, ...). On synthetic data the exact expected accuracy of every greedy selection is known
too, so a grid's ``metrics.csv`` says how well each offline metric tracks it:

* **per epoch**: every (run, seed, epoch) record of the grid is one point, the metric's validation value
  against the validation oracle accuracy (the mean of ``val_oracle_acc_n`` over the logged shots) of the
  same epoch. The rank correlation is Spearman's ρ (``scipy.stats.spearmanr``); its 95% interval is a
  bootstrap (``scipy.stats.bootstrap``, percentile) that resamples whole runs (a seed of a variant), since
  the epochs of one run are not independent;
* **per run**: every (run, seed) is one point, its final test metric against its final test oracle
  accuracy (the mean of ``test_oracle_acc_n``); the bootstrap resamples runs;
* **best-epoch selection**: for every run, the epoch of its last phase that a candidate ``best_metric``
  picks (the first of equal values, as :class:`leverjax.core.evaluate.Evaluator` keeps them) against the epoch
  with the highest validation oracle accuracy: the accuracy lost (percentage points, ≥ 0), mean and 95% t
  interval over runs, and the share of runs where the pick is the oracle-best epoch. ``last epoch`` (no
  selection) is listed for comparison.

The orientation of a metric (``min`` for the loss, ``max`` otherwise) turns ρ into an *oriented* ρ: +1 means
"better by the metric" is "more accurate" exactly. The metric that predicts best is the candidate
``best_metric`` with the smallest mean best-epoch loss, ties broken by the per-epoch oriented ρ.

    python -m leverjax.report --metric_validity results/grid
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import bootstrap, spearmanr

from leverjax.core import stats

# offline metric (without its val_/test_ prefix) -> orientation ("min": lower is better)
OFFLINE_METRICS = {
    "loss": "min",
    "expected_reward": "max",
    "top1_reward": "max",
    "greedy_labelled": "max",
    "greedy_labelled_reward": "max",
    "changed_vs_ref": "max",
    "redundancy": "min",
}
# the metrics a best-epoch rule can use (changed_vs_ref and redundancy say nothing about quality by themselves)
BEST_METRIC_CANDIDATES = ("loss", "expected_reward", "top1_reward", "greedy_labelled", "greedy_labelled_reward")
RESAMPLES = 2000


def _oracle_mean(record: dict, prefix: str) -> float | None:
    xs = [v for k, v in record.items() if k.startswith(f"{prefix}oracle_acc_") and k[len(prefix) + 11:].isdigit()
          and v is not None and math.isfinite(v)]
    return float(np.mean(xs)) if xs else None


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(spearmanr(x, y).statistic)


def clustered_spearman(points: Sequence[tuple[Sequence[float], Sequence[float]]], *, resamples: int = RESAMPLES,
                       seed: int = 0) -> dict[str, Any]:
    """Spearman's ρ over every point of every cluster (``points``: one ``(x, y)`` pair of sequences per cluster)
    and a 95% percentile bootstrap interval that resamples clusters (``scipy.stats.bootstrap``).

    Returns ``{"rho", "low", "high", "points", "clusters"}``; the interval is NaN with fewer than 3 clusters or
    when every resample is degenerate."""
    xs = [np.asarray(x, np.float64) for x, _ in points]
    ys = [np.asarray(y, np.float64) for _, y in points]
    keep = [i for i in range(len(xs)) if len(xs[i])]
    xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
    n_points = int(sum(len(x) for x in xs))
    out = {"rho": math.nan, "low": math.nan, "high": math.nan, "points": n_points, "clusters": len(xs)}
    if not xs:
        return out
    out["rho"] = _spearman(np.concatenate(xs), np.concatenate(ys))
    if len(xs) < 3 or not math.isfinite(out["rho"]):
        return out

    def statistic(ids):
        ids = np.asarray(ids, int)
        return _spearman(np.concatenate([xs[i] for i in ids]), np.concatenate([ys[i] for i in ids]))

    res = bootstrap((np.arange(len(xs)),), statistic, vectorized=False, n_resamples=resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    out["low"], out["high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return out


def _last_phase_epochs(run) -> list[tuple[str, int]]:
    order = run.ordered_epochs()
    return [pe for pe in order if pe[0] == order[-1][0]] if order else []


def metric_validity(runs: Sequence[Any], *, source: str = "the grid", resamples: int = RESAMPLES,
                    seed: int = 0) -> dict[str, Any]:
    """The correlations and best-epoch losses of every offline metric of a grid's ``runs`` (module docstring;
    :func:`leverjax.report.grid_runs` reads them from a results directory, ``source`` in messages).

    Raises ``ValueError`` when the grid logged no oracle accuracy (real data: nothing to validate against)."""
    if not any(_oracle_mean(rec, "val_") is not None for run in runs for rec in run.epochs.values()):
        raise ValueError(f"{source}: no oracle accuracy was logged (metric validity needs synthetic data "
                         "with a ground truth)")
    present = {k for run in runs for rec in run.epochs.values() for k in rec}
    metrics = [m for m in OFFLINE_METRICS if f"val_{m}" in present]
    per_epoch, per_run = {}, {}
    for m in metrics:
        points = []
        for run in runs:
            pairs = [(rec.get(f"val_{m}"), _oracle_mean(rec, "val_")) for rec in run.epochs.values()]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None and math.isfinite(a)]
            points.append(([a for a, _ in pairs], [b for _, b in pairs]))
        per_epoch[m] = clustered_spearman(points, resamples=resamples, seed=seed)
        finals = [(run.final.get(f"test_{m}"), _oracle_mean(run.final, "test_")) for run in runs]
        finals = [(a, b) for a, b in finals if a is not None and b is not None and math.isfinite(a)]
        per_run[m] = clustered_spearman([([a], [b]) for a, b in finals], resamples=resamples, seed=seed)
    selection = {}
    for m in [c for c in BEST_METRIC_CANDIDATES if c in metrics] + ["last epoch"]:
        losses, hits = [], []
        for run in runs:
            epochs = _last_phase_epochs(run)
            acc = [_oracle_mean(run.epochs[pe], "val_") for pe in epochs]
            if not epochs or any(a is None for a in acc):
                continue
            if m == "last epoch":
                pick = len(epochs) - 1
            else:
                sign = 1.0 if OFFLINE_METRICS[m] == "min" else -1.0
                scores = [run.epochs[pe].get(f"val_{m}") for pe in epochs]
                scores = [sign * s if s is not None and math.isfinite(s) else math.inf for s in scores]
                if all(s == math.inf for s in scores):
                    continue
                pick = int(np.argmin(scores))  # the first of equal values
            best = max(acc)
            losses.append(100.0 * (best - acc[pick]))
            hits.append(float(acc[pick] == best))
        mean, half = stats.mean_ci(losses)
        selection[m] = {"loss_pts": mean, "half": half, "runs": len(losses),
                        "hit_share": float(np.mean(hits)) if hits else math.nan}
    for m in metrics:
        sign = -1.0 if OFFLINE_METRICS[m] == "min" else 1.0
        for table in (per_epoch, per_run):
            table[m]["oriented_rho"] = sign * table[m]["rho"]
    ranked = sorted((m for m in selection if m != "last epoch" and math.isfinite(selection[m]["loss_pts"])),
                    key=lambda m: (selection[m]["loss_pts"], -_finite_or(per_epoch[m]["oriented_rho"], -2.0)))
    phase = sorted({_last_phase_epochs(r)[0][0] for r in runs if r.epochs})
    return {"directory": source, "runs": len(runs), "variants": len({r.variant for r in runs}),
            "last_phases": phase, "per_epoch": per_epoch, "per_run": per_run, "best_epoch": selection,
            "best_metric": f"val_{ranked[0]}" if ranked else None,
            "best_mode": OFFLINE_METRICS[ranked[0]] if ranked else None}


def _finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def _fmt(x: float, digits: int = 2, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_validity(result: dict[str, Any]) -> str:
    """The result of :func:`metric_validity` as Markdown tables."""
    lines = [f"## Metric validity: `{result['directory']}`", "",
             f"{result['runs']} run(s) (seeds × {result['variants']} variant(s)); best-epoch selection within the "
             f"last phase ({', '.join(result['last_phases'])}). Spearman's ρ with the oracle accuracy (mean over the "
             "logged shots), 95% bootstrap interval over runs. ρ as measured: a metric that tracks accuracy has ρ "
             "near +1 where better is max and near −1 where better is min.", "",
             "| metric | better | ρ per epoch (val) [95% CI] | points | ρ per run (final test) [95% CI] | runs |",
             "|:---|:---|---:|---:|---:|---:|"]
    for m, e in result["per_epoch"].items():
        r = result["per_run"][m]
        lines.append(f"| {m} | {OFFLINE_METRICS[m]} | {_fmt(e['rho'])} [{_fmt(e['low'])}, {_fmt(e['high'])}] | "
                     f"{e['points']} | {_fmt(r['rho'])} [{_fmt(r['low'])}, {_fmt(r['high'])}] | {r['points']} |")
    lines += ["", "| best_metric | oracle accuracy lost vs the oracle-best epoch (pts, mean ± 95% CI) | "
              "picks the oracle-best epoch | runs |", "|:---|---:|---:|---:|"]
    for m, s in result["best_epoch"].items():
        name = m if m == "last epoch" else f"val_{m} ({OFFLINE_METRICS[m]})"
        ci = f"{_fmt(s['loss_pts'], 3, False)} ± {_fmt(s['half'], 3, False)}"
        lines.append(f"| {name} | {ci} | {_fmt(100 * s['hit_share'], 0, False)}% | {s['runs']} |")
    if result["best_metric"]:
        lines += ["", f"Best predictor for best-epoch selection: `--best_metric={result['best_metric']} "
                      f"--best_mode={result['best_mode']}`."]
    return "\n".join(lines) + "\n"
