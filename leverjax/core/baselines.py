"""Reference selections a trained selector is judged against: the floor, common practice and the ceiling.

All are computed on the same queries as the offline evaluation (a split's queries with at least one
labelled trajectory) and need nothing but the data set (and, for the reward-based numbers, the raw reward
of every labelled trajectory). A selection of n demonstrations is in prompt order, like the selector's
greedy picks (its n-shot selection is its first n picks).

On data with a ground truth (``oracle_*`` keys, the synthetic set), the exact expected accuracy
(:func:`leverjax.data.synth.oracle_accuracy_np`) of, for n = 1..4 shots:

=================  =====================================================================================
``random``         n distinct demonstrations drawn uniformly from the query's pool, in random order:
                   the expectation over all draws, exact for n ≤ 2 (every ordered tuple), else the mean
                   of ``samples`` seeded draws per query (its Monte Carlo standard error is reported)
``random_all``     n distinct demonstrations drawn uniformly from the whole candidate set (every example but
                   the query), in random order: the original's random baseline, which does not look at the
                   pool; the mean of ``samples`` seeded draws per query (its Monte Carlo standard error is
                   reported)
``similarity``     the n pool candidates nearest to the query by cosine of the embeddings, most similar
                   first (the order of the data's own retrieval trajectories)
``best_labelled``  the query's labelled trajectory with the highest expected accuracy (the oracle picks
                   it), its first n steps; labelled trajectories have S steps, so n > S has no value
``oracle_greedy``  the ceiling of greedy selection: demonstrations appended one at a time, each the
                   pool candidate that maximises the expected accuracy of the prompt so far (for n = 1
                   the exact best; for n > 1 greedy, not an exhaustive search)
=================  =====================================================================================

On any data, the offline metrics that apply to a selection that is not a policy over the labelled
trajectories: ``random`` gets expected and top-1 reward (a uniform policy, and a uniformly random ranking,
of the labelled trajectories: both the mean labelled reward), the share of its S-step picks that are
labelled, their mean reward and the redundancy of its picks, all exact expectations; ``similarity`` gets
the labelled share and reward of its top-S retrieval, the redundancy of its top ``shots`` and the top-1
reward of the labelled trajectory whose demonstrations are on average most similar to the query. Expected
reward does not apply to similarity retrieval (it puts no distribution on the labelled trajectories).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Mapping

import numpy as np

from leverjax.data.npz import Dataset

MAX_SHOTS = 4
SPLITS = {"train": 0, "val": 1, "test": 2}
EXACT_RANDOM_MAX_SHOTS = 2


def evaluation_queries(ds: Dataset, split: str) -> np.ndarray:
    """Query rows of ``split`` that have at least one labelled trajectory (those the evaluation scores)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return np.flatnonzero((ds.split == SPLITS[split]) & ds.traj_mask.any(-1))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pool_cosines(ds: Dataset, q: int) -> np.ndarray:
    """Cosine between query ``q``'s embedding and each of its pool candidates' (−inf at padded slots)."""
    valid = ds.pool_ids[q] >= 0
    cos = np.full(ds.pool_ids.shape[1], -np.inf)
    cos[valid] = _unit(ds.emb[ds.pool_ids[q, valid]]) @ _unit(ds.emb[ds.query_ids[q]])
    return cos


def similarity_positions(ds: Dataset, q: int, n: int) -> np.ndarray:
    """Pool positions of the ``n`` candidates most similar to query ``q``, most similar first (ties: lower
    position first); fewer when the pool is smaller."""
    cos = pool_cosines(ds, q)
    order = np.argsort(-cos, kind="stable")
    return order[: min(n, int(np.isfinite(cos).sum()))]


def _oracle(ds: Dataset, q: int, demo_rows: np.ndarray) -> np.ndarray:
    """Expected accuracy of each row of ``demo_rows`` [B, n] (global rows) for query ``q``, float64 [B]."""
    from leverjax.data.synth import oracle_accuracy_np

    demo_rows = np.asarray(demo_rows, np.int64)
    out = np.empty(demo_rows.shape[0])
    for start in range(0, demo_rows.shape[0], 65536):
        chunk = demo_rows[start:start + 65536]
        out[start:start + len(chunk)] = oracle_accuracy_np(ds.oracle, np.full(len(chunk), ds.query_ids[q]), chunk)
    return out


@functools.lru_cache(maxsize=64)
def _ordered_tuples(k: int, n: int) -> np.ndarray:
    """Every ordered n-tuple of distinct values in range(k), [k!/(k−n)!, n], in lexicographic order."""
    return np.array(list(itertools.permutations(range(k), n)), np.int64).reshape(-1, n)


def _random_draws(rng: np.random.Generator, k: int, n: int, samples: int) -> np.ndarray:
    """``samples`` uniform ordered draws of n distinct values of range(k), [samples, n]."""
    keys = rng.random((samples, k))
    return np.argsort(keys, axis=1)[:, :n]


def _whole_set_draws(rng: np.random.Generator, n_rows: int, query_row: int, n: int, samples: int) -> np.ndarray:
    """``samples`` uniform ordered draws of n distinct rows of range(n_rows) other than ``query_row``,
    [samples, n] (the rare draws that repeat a row are drawn again)."""
    def draw():
        rows = rng.integers(0, n_rows - 1, size=(samples, n))
        return rows + (rows >= query_row)  # every row but the query's

    out = draw()
    while n > 1:
        ordered = np.sort(out, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        if not repeated.any():
            break
        out[repeated] = draw()[repeated]
    return out


def oracle_references(ds: Dataset, index: np.ndarray, *, shots: int = MAX_SHOTS, samples: int = 4096,
                      seed: int = 0) -> dict[str, dict[str, Any]]:
    """Mean expected accuracy over the queries ``index`` of each reference selection (module docstring).

    Returns ``{name: {"acc": {n: value or None}, ...}}``; ``random`` and ``random_all`` also hold
    ``"stderr"`` (Monte Carlo standard error of each value, 0 where exact) and ``random`` ``"exact"`` (n -> bool).
    """
    if not ds.oracle:
        raise ValueError("the data set has no oracle_* keys (no ground truth to score selections with)")
    rng = np.random.default_rng(seed)
    rng_all = np.random.default_rng([seed, 1])  # its own stream: the pool's random draws stay those of before
    steps = ds.num_steps
    shot_range = range(1, shots + 1)
    names = ("random", "random_all", "similarity", "best_labelled", "oracle_greedy")
    per_q = {name: {n: [] for n in shot_range} for name in names}
    mc_var = {n: [] for n in shot_range}
    mc_var_all = {n: [] for n in shot_range}
    n_rows = ds.emb.shape[0]
    for q in index:
        valid_pos = np.flatnonzero(ds.pool_ids[q] >= 0)
        rows = ds.pool_ids[q, valid_pos]
        k = len(valid_pos)
        for n in shot_range:
            m = min(n, k)
            if m <= EXACT_RANDOM_MAX_SHOTS:
                acc = _oracle(ds, q, rows[_ordered_tuples(k, m)])
                per_q["random"][n].append(acc.mean())
                mc_var[n].append(0.0)
            else:
                acc = _oracle(ds, q, rows[_random_draws(rng, k, m, samples)])
                per_q["random"][n].append(acc.mean())
                mc_var[n].append(acc.var(ddof=1) / samples)
            acc = _oracle(ds, q, _whole_set_draws(rng_all, n_rows, int(ds.query_ids[q]), n, samples))
            per_q["random_all"][n].append(acc.mean())
            mc_var_all[n].append(acc.var(ddof=1) / samples)
        sim = ds.pool_ids[q, similarity_positions(ds, q, shots)]
        for n in shot_range:
            per_q["similarity"][n].append(_oracle(ds, q, sim[None, :n])[0])
        labelled = ds.traj[q][ds.traj_mask[q]]  # [M_q, S] pool positions
        for n in shot_range:
            if n <= steps:
                per_q["best_labelled"][n].append(_oracle(ds, q, ds.pool_ids[q][labelled[:, :n]]).max())
        chosen: list[int] = []
        for n in shot_range:
            if len(chosen) < k:
                left = np.array([r for r in rows if r not in chosen])
                cand = np.concatenate([np.tile(np.array(chosen, np.int64), (len(left), 1)), left[:, None]], 1)
                acc = _oracle(ds, q, cand)
                chosen.append(int(left[int(np.argmax(acc))]))
            per_q["oracle_greedy"][n].append(_oracle(ds, q, np.array([chosen]))[0])
    out: dict[str, dict[str, Any]] = {}
    for name, by_n in per_q.items():
        out[name] = {"acc": {n: (float(np.mean(v)) if v else None) for n, v in by_n.items()}}
    count = len(index)
    out["random"]["stderr"] = {n: float(math.sqrt(sum(v)) / count) if count else None for n, v in mc_var.items()}
    out["random"]["exact"] = {n: n <= EXACT_RANDOM_MAX_SHOTS for n in shot_range}
    out["random_all"]["stderr"] = {n: float(math.sqrt(sum(v)) / count) if count else None
                                   for n, v in mc_var_all.items()}
    return out


def offline_references(ds: Dataset, index: np.ndarray, rewards: np.ndarray, *, shots: int = MAX_SHOTS
                       ) -> dict[str, dict[str, float | None]]:
    """The offline metrics that apply to random and similarity selection (module docstring), averaged over
    the queries ``index`` like the evaluation; ``rewards`` [Q, M] are the raw rewards of the labelled
    trajectories. Metrics that do not apply are absent."""
    steps = ds.num_steps
    emb = _unit(ds.emb)
    rand = {"expected_reward": [], "labelled_p": [], "labelled_r": [], "redundancy": []}
    sim = {"top1_reward": [], "greedy_labelled": [], "labelled_reward": [], "redundancy": []}
    for q in index:
        tm = ds.traj_mask[q]
        r = np.asarray(rewards[q], np.float64)[tm]
        labelled = ds.traj[q][tm]
        valid_pos = np.flatnonzero(ds.pool_ids[q] >= 0)
        k = len(valid_pos)
        perms = math.perm(k, steps) if k >= steps else 0
        rand["expected_reward"].append(r.mean())
        rand["labelled_p"].append(len(labelled) / perms if perms else 0.0)
        rand["labelled_r"].append(r.mean())
        e = emb[ds.pool_ids[q, valid_pos]]
        cos = e @ e.T
        if k >= 2:
            rand["redundancy"].append((cos.sum() - np.trace(cos)) / (k * (k - 1)))
        picks = similarity_positions(ds, q, max(shots, steps))
        first = picks[:steps]
        match = np.all(labelled == first[None, :], axis=1) if len(first) == steps else np.zeros(len(labelled), bool)
        sim["greedy_labelled"].append(float(match.any()))
        if match.any():
            sim["labelled_reward"].append(r[match].mean())
        qcos = pool_cosines(ds, q)
        sim["top1_reward"].append(r[int(np.argmax(qcos[labelled].mean(1)))])
        if shots >= 2 and len(picks[:shots]) >= 2:
            pe = emb[ds.pool_ids[q, picks[:shots]]]
            c = pe @ pe.T
            m = len(pe)
            sim["redundancy"].append((c.sum() - np.trace(c)) / (m * (m - 1)))
    p = np.asarray(rand["labelled_p"])
    mean = lambda xs: float(np.mean(xs)) if len(xs) else None  # noqa: E731
    random_row = {
        "expected_reward": mean(rand["expected_reward"]),
        "top1_reward": mean(rand["expected_reward"]),
        "greedy_labelled": mean(p),
        # the evaluation averages the labelled picks' reward over the queries whose pick is labelled:
        # in expectation, the mean labelled reward weighted by each query's chance of a labelled pick
        "greedy_labelled_reward": float(np.sum(p * np.asarray(rand["labelled_r"])) / p.sum()) if p.sum() > 0 else None,
        "redundancy": mean(rand["redundancy"]) if shots >= 2 else None,
    }
    similarity_row = {
        "top1_reward": mean(sim["top1_reward"]),
        "greedy_labelled": mean(sim["greedy_labelled"]),
        "greedy_labelled_reward": mean(sim["labelled_reward"]),
        "redundancy": mean(sim["redundancy"]) if shots >= 2 else None,
    }
    return {"random": {k: v for k, v in random_row.items() if v is not None},
            "similarity": {k: v for k, v in similarity_row.items() if v is not None}}


def compute(ds: Dataset, rewards: np.ndarray, *, splits: tuple[str, ...] = ("val", "test"), shots: int = MAX_SHOTS,
            samples: int = 4096, seed: int = 0) -> dict[str, Any]:
    """Every reference of every split, JSON-ready: ``{"splits": {split: {"queries": n, "offline": {...},
    "oracle": {...} (ground-truth data only)}}, "num_steps": S, "shots": shots, "samples": ..., "seed": ...}``."""
    shots = int(min(shots, MAX_SHOTS))
    out: dict[str, Any] = {"num_steps": ds.num_steps, "shots": shots, "samples": samples, "seed": seed,
                           "has_oracle": bool(ds.oracle), "splits": {}}
    for split in splits:
        index = evaluation_queries(ds, split)
        if not len(index):
            continue
        entry: dict[str, Any] = {"queries": int(len(index)),
                                 "offline": offline_references(ds, index, rewards, shots=shots)}
        if ds.oracle:
            entry["oracle"] = oracle_references(ds, index, shots=shots, samples=samples, seed=seed)
        out["splits"][split] = entry
    return out


def json_ready(obj: Any) -> Any:
    """``obj`` with int dictionary keys as strings and non-finite floats as None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
