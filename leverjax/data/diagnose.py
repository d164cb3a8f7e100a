"""``python -m leverjax.data.diagnose DATA.npz``: what the RL data gives a trainer to learn from.

The figures of the original's ``analyze_rl_data_v4.py``, per split (train by default):

* sizes: queries, trajectories, group sizes (min, median, mean, max), distinct demonstrations used, and the
  duplicate rate (trajectories whose demonstrations, in any order, repeat another of the same query);
* labels: positive share (``correct``), positives per query (quantiles), queries with no positive, with only
  positives, and with a flat reward (variance of ``acc`` below 1e-6: a group that gives GRPO no signal; the
  original's test on ``gt_prob`` is reported beside it);
* per generation method: count, positive rate, mean accuracy, mean ``gt_prob``;
* Spearman's correlation of ``gt_prob`` with ``acc`` over the trajectories that have both;
* with beam ranks (``gen_rank``, data from :mod:`leverjax.data.generate`): the reward–rank correlation (mean
  over queries of Spearman's ρ between a beam's rank, best first, and its accuracy: negative when the selector's
  order agrees with the labels) and the gap between the best labelled candidate and the selector's own pick
  (beam rank 0): mean gap and the share of queries where it exceeds 0.2.

Every figure is ``None`` (JSON null) where no query defines it, never NaN.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from leverjax.data.npz import SPLITS, Dataset

FLAT_VARIANCE = 1e-6
GAP_THRESHOLD = 0.2


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(values) -> float | None:
    values = np.asarray(values, np.float64)
    return _num(values.mean()) if values.size else None


def _spearman(x, y) -> float | None:
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return _num(stats.spearmanr(x, y).statistic)


def diagnose(ds: Dataset, split: str = "train") -> dict[str, Any]:
    """The figures of the module docstring for the queries of ``split`` (``all``: every query)."""
    rows = np.arange(ds.num_queries) if split == "all" else ds.split_index(split)
    mask = ds.traj_mask[rows]
    sizes = mask.sum(1)
    rows, mask, sizes = rows[sizes > 0], mask[sizes > 0], sizes[sizes > 0]
    out: dict[str, Any] = {"split": split, "queries": int(len(rows)), "trajectories": int(sizes.sum())}
    if not len(rows):
        return out
    acc, correct = ds.acc[rows], ds.correct[rows] > 0.5
    gt = ds.gt_prob[rows]
    out["group_size"] = {"min": int(sizes.min()), "median": _num(np.median(sizes)), "mean": _num(sizes.mean()),
                         "max": int(sizes.max())}
    traj = ds.traj[rows]
    used = np.take_along_axis(ds.pool_ids[rows], np.maximum(traj, 0).reshape(len(rows), -1), 1)
    out["distinct_demonstrations"] = int(np.unique(used.reshape(traj.shape)[mask]).size)
    dup = 0
    for r in range(len(rows)):
        sets = [tuple(sorted(t)) for t in traj[r][mask[r]].tolist()]
        dup += len(sets) - len(set(sets))
    out["duplicate_rate"] = dup / int(sizes.sum())
    pos = (correct & mask).sum(1)
    out["positive_share"] = _num((correct & mask).sum() / sizes.sum())
    out["positives_per_query"] = {q: _num(np.quantile(pos, p)) for q, p in
                                  (("min", 0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1))}
    out["zero_positive_share"] = _num((pos == 0).mean())
    out["all_positive_share"] = _num((pos == sizes).mean())
    acc_var = np.array([np.var(acc[r][mask[r]]) for r in range(len(rows))])
    out["flat_acc_share"] = _num((acc_var < FLAT_VARIANCE).mean())
    gt_flat = [np.var(g[np.isfinite(g)]) < FLAT_VARIANCE for g in (gt[r][mask[r]] for r in range(len(rows)))
               if np.isfinite(g).sum() >= 2]
    out["flat_gt_prob_share"] = _num(np.mean(gt_flat)) if gt_flat else None
    methods = {}
    for code, name in enumerate(ds.gen_methods):
        sel = mask & (ds.gen_method[rows] == code)
        if sel.any():
            g = gt[sel]
            methods[name] = {"count": int(sel.sum()), "positive_rate": _num(correct[sel].mean()),
                             "mean_acc": _num(acc[sel].mean()),
                             "mean_gt_prob": _num(g[np.isfinite(g)].mean()) if np.isfinite(g).any() else None}
    out["methods"] = methods
    both = mask & np.isfinite(gt)
    out["spearman_gt_prob_acc"] = _spearman(gt[both], acc[both])
    if ds.gen_rank is not None:
        rank = ds.gen_rank[rows]
        rhos, gaps = [], []
        for r in range(len(rows)):
            beams = mask[r] & (rank[r] >= 0)
            rho = _spearman(rank[r][beams], acc[r][beams])
            if rho is not None:
                rhos.append(rho)
            first = np.flatnonzero(mask[r] & (rank[r] == 0))
            if len(first):
                gaps.append(float(acc[r][mask[r]].max() - acc[r][first[0]]))
        out["rank_acc_spearman"] = _mean(rhos)
        out["rank_acc_queries"] = len(rhos)
        out["best_minus_top_beam"] = _mean(gaps)
        out["gap_above_0_2_share"] = _mean(np.asarray(gaps) > GAP_THRESHOLD) if gaps else None
    return out


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def format_diagnosis(d: dict) -> str:
    """The diagnosis as a few readable lines."""
    if not d["queries"]:
        return f"{d['split']}: no query with a labelled trajectory"
    g, p = d["group_size"], d["positives_per_query"]
    lines = [
        f"{d['split']}: {d['queries']} queries, {d['trajectories']} trajectories; group size min {g['min']} / median "
        f"{_f(g['median'], 1)} / mean {_f(g['mean'], 2)} / max {g['max']}",
        f"  distinct demonstrations {d['distinct_demonstrations']}; duplicate rate {_f(d['duplicate_rate'])}",
        f"  positive share {_f(d['positive_share'])}; positives per query min {_f(p['min'], 0)} / p25 "
        f"{_f(p['p25'], 1)} / median {_f(p['median'], 1)} / p75 {_f(p['p75'], 1)} / max {_f(p['max'], 0)}",
        f"  queries with no positive {_f(d['zero_positive_share'])}, only positives {_f(d['all_positive_share'])}, "
        f"flat acc {_f(d['flat_acc_share'])}, flat gt_prob {_f(d['flat_gt_prob_share'])}",
        f"  Spearman(gt_prob, acc) {_f(d['spearman_gt_prob_acc'])}",
    ]
    if "rank_acc_spearman" in d:
        lines.append(f"  beams: Spearman(rank, acc) {_f(d['rank_acc_spearman'])} over {d['rank_acc_queries']} "
                     f"queries; best minus top beam {_f(d['best_minus_top_beam'])}, share above {GAP_THRESHOLD} "
                     f"{_f(d['gap_above_0_2_share'])}")
    lines.append("  method        count  positive  mean acc  mean gt_prob")
    for name, m in d["methods"].items():
        lines.append(f"  {name:<12} {m['count']:>6}  {_f(m['positive_rate']):>8}  {_f(m['mean_acc']):>8}  "
                     f"{_f(m['mean_gt_prob']):>12}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    from leverjax.data.npz import load_npz
    from leverjax.fileio import dumps_strict

    ds = load_npz(argv[1])
    splits = list(SPLITS.values()) if flags.FLAGS.split == "every" else [flags.FLAGS.split]
    result = [diagnose(ds, s) for s in splits]
    if flags.FLAGS.json:
        print(dumps_strict(result if len(result) > 1 else result[0], indent=1))
    else:
        print(f"{argv[1]}: methods {', '.join(ds.gen_methods)}")
        print("\n".join(format_diagnosis(d) for d in result))


def _cli() -> None:
    from absl import flags

    from leverjax.command import run
    from leverjax.errors import ConfigError

    flags.DEFINE_enum("split", "train", ["train", "val", "test", "all", "every"],
                      "the queries: one split, all together, or every split apart")
    flags.DEFINE_bool("json", False, "print JSON instead of lines")

    def checked(argv):
        if len(argv) < 2:
            raise ConfigError("give the data file: python -m leverjax.data.diagnose DATA.npz")
        main(argv)

    checked.__module__ = __name__
    run(checked, command="python -m leverjax.data.diagnose", about="What RL data gives a trainer: sizes, "
        "positive shares, flat groups, per-method rates (the original's analyze_rl_data_v4).",
        positional=("data",))


if __name__ == "__main__":
    _cli()
