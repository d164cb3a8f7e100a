"""Named data transforms (the original's data scripts) and a seeded subsample, applied to the training queries.

A transform spec names transforms joined by ``+``, applied in order (``strict_balanced+mine_positives``); the
config field ``data_transform`` holds it, so a grid sweeps it like any other field
(``--sweep=data_transform=none,balanced,strict_balanced``), and ``data_queries`` then keeps a seeded subset of
that many training queries, so that balance and volume can be told apart. Only the training queries change:
validation and test keep their queries and trajectories, so every run is evaluated on the same data.

A query's positives are its trajectories with ``correct`` = 1, its share their fraction of its group.

==================  =======================================================================================
``none``            nothing
``balanced``        keep queries with a positive share in [0.40, 0.60] (``generate_balanced_rl_data.py``)
``strict_balanced`` keep queries with at least 2 positives, at least 3 negatives and a positive share of at
                    most 0.6 (``filter_strict_balanced_queries.py``)
``low_pos_ratio``   keep queries with at least 1 positive, at least 3 negatives and a positive share of at
                    most 0.45 (``filter_vqav2_low_pos_ratio.py``)
``mine_positives``  per query the 8 positives of highest accuracy, then the 4 negatives of highest accuracy
                    (hard negatives; ties in the data's order); queries without a positive are dropped
                    (``mine_positive_samples.py balance``)
``diverse``         keep queries whose trajectories have at least 2 distinct accuracies (the test of
                    ``augment_rl_data_diversity.py``, which regenerates the others: here the data loop's rounds
                    do that)
==================  =======================================================================================
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from leverjax.data.npz import Dataset
from leverjax.errors import ConfigError, DataError

# The original scripts' thresholds.
BALANCED_SHARE = (0.40, 0.60)
STRICT = {"min_positives": 2, "min_negatives": 3, "max_share": 0.6}
LOW_POS = {"min_positives": 1, "min_negatives": 3, "max_share": 0.45}
MINE = {"positives": 8, "negatives": 4, "min_positives": 1}
MIN_LEVELS = 2


def _counts(ds: Dataset, rows: np.ndarray):
    mask = ds.traj_mask[rows]
    pos = ((ds.correct[rows] > 0.5) & mask).sum(1)
    n = mask.sum(1)
    return pos, n - pos, np.where(n > 0, pos / np.maximum(n, 1), 0.0)


def _keep(ds: Dataset, rows: np.ndarray, keep: np.ndarray) -> tuple[Dataset, np.ndarray]:
    return ds, rows[keep]


def balanced(ds, rows):
    _, _, share = _counts(ds, rows)
    lo, hi = BALANCED_SHARE
    return _keep(ds, rows, (share >= lo - 1e-12) & (share <= hi + 1e-12))


def strict_balanced(ds, rows):
    pos, neg, share = _counts(ds, rows)
    return _keep(ds, rows, (pos >= STRICT["min_positives"]) & (neg >= STRICT["min_negatives"])
                 & (share <= STRICT["max_share"] + 1e-12))


def low_pos_ratio(ds, rows):
    pos, neg, share = _counts(ds, rows)
    return _keep(ds, rows, (pos >= LOW_POS["min_positives"]) & (neg >= LOW_POS["min_negatives"])
                 & (share <= LOW_POS["max_share"] + 1e-12))


def diverse(ds, rows):
    mask = ds.traj_mask[rows]
    levels = np.array([np.unique(ds.acc[r][m]).size for r, m in zip(rows, mask)])
    return _keep(ds, rows, levels >= MIN_LEVELS)


def mine_positives(ds, rows):
    """Re-orders and cuts each query's group (positives first, then hard negatives; the rest dropped)."""
    pos, _, _ = _counts(ds, rows)
    rows = rows[pos >= MINE["min_positives"]]
    arrays = {k: getattr(ds, k).copy() for k in ("traj", "acc", "correct", "gt_prob", "rel", "gen_method")}
    for k in ("gen_rank", "gen_temperature"):
        if getattr(ds, k) is not None:
            arrays[k] = getattr(ds, k).copy()
    for r in rows:
        m = np.flatnonzero(ds.traj_mask[r])
        good = ds.correct[r, m] > 0.5
        order_pos = m[good][np.argsort(-ds.acc[r, m[good]], kind="stable")][:MINE["positives"]]
        order_neg = m[~good][np.argsort(-ds.acc[r, m[~good]], kind="stable")][:MINE["negatives"]]
        take = np.concatenate([order_pos, order_neg])
        for k, a in arrays.items():
            src = getattr(ds, k)[r]
            fill = -1 if a.dtype.kind == "i" else (0.0 if k in ("acc", "correct") else np.nan)
            a[r] = fill
            a[r, :len(take)] = src[take]
    return dataclasses.replace(ds, **arrays), rows


TRANSFORMS: dict[str, Callable] = {
    "none": lambda ds, rows: (ds, rows),
    "balanced": balanced,
    "strict_balanced": strict_balanced,
    "low_pos_ratio": low_pos_ratio,
    "mine_positives": mine_positives,
    "diverse": diverse,
}


def parse_spec(spec: str) -> list[str]:
    """The transform names of ``spec`` (``a+b``), or a :class:`ConfigError` naming the unknown one."""
    names = [p.strip() for p in str(spec).split("+")]
    for name in names:
        if name not in TRANSFORMS:
            raise ConfigError(f"data_transform={spec!r}: {name!r} is not a transform; valid: "
                              f"{', '.join(TRANSFORMS)} (joined by +)")
    return names


def _stats(ds: Dataset, rows: np.ndarray) -> dict:
    pos, neg, _ = _counts(ds, rows)
    n = int((pos + neg).sum())
    return {"queries": int(len(rows)), "trajectories": n, "positive_share": float(pos.sum() / n) if n else None}


def curate(ds: Dataset, spec: str = "none", *, queries: int = 0, seed: int = 0) -> tuple[Dataset, dict]:
    """``ds`` with the transforms of ``spec`` applied to its training queries, then (``queries`` > 0) a seeded
    subset of that many of them; returns the data and a record of every step (queries, trajectories,
    positive share of the training queries). A step that leaves no training query is an error."""
    names = parse_spec(spec)
    if queries < 0:
        raise ConfigError(f"data_queries={queries} must be at least 0 (0: all)")
    train = ds.split_index("train")
    rows = train
    steps = [{"step": "input", **_stats(ds, rows)}]
    for name in names:
        if name == "none":
            continue
        ds, rows = TRANSFORMS[name](ds, rows)
        steps.append({"step": name, **_stats(ds, rows)})
        if not len(rows):
            raise DataError(f"data_transform={spec!r}: {name} leaves no training query (of {len(train)})")
    if queries:
        if queries > len(rows):
            raise DataError(f"data_queries={queries} exceeds the {len(rows)} training queries left after "
                            f"data_transform={spec!r}")
        rows = np.sort(np.random.default_rng(seed).choice(rows, queries, replace=False))
        steps.append({"step": f"subsample {queries} (seed {seed})", **_stats(ds, rows)})
    others = np.flatnonzero(ds.split != 0)
    keep = np.sort(np.concatenate([rows, others]))
    return ds.subset(keep), {"transform": spec, "queries": queries, "seed": seed, "steps": steps,
                             "train": steps[-1]}
