"""A synthetic Lever-Plus data set with a hidden ground truth, and its exact oracle.

The simulator mimics the pipeline that produced the reference's RL data:

- **Examples** have latent skill vectors (unit vectors around a few cluster centres) and a
  demonstration quality (``quality_weight`` × the skills' projection on a hidden direction, one per
  cluster group when ``quality_directions`` > 1, plus noise): what makes a demonstration useful
  beyond its similarity. The observed embedding is a noisy, mixed view: a random linear map of the
  skills plus a nuisance factor (style, unrelated to usefulness) plus noise, L2-normalised.
- **A demonstration set** D = (j_1..j_n), in prompt order, helps query q by
  ``total = Σ_t w_t·u_qj_t / (Σ_t w_t)^shot_norm − redundancy(D) − shot_cost·(n − 1)`` where
  ``u_qj = rel_scale·(cos(z_q, z_j) − rel_center) + quality_j + z_q·A·z_j·n^−β`` (irrelevant
  demonstrations hurt; A, a hidden random interaction of scale ``interaction_weight``, is what a
  demonstration is worth to this query beyond similarity: learnt only from the training queries;
  zero unless the preset sets it; β = ``interaction_dilution`` makes it count less the more
  demonstrations share the prompt), ``w_t = position_decay^(n−1−t)`` (the demonstration next to
  the query weighs most; the weighted sum is divided by ``(Σ_t w_t)^shot_norm``: 0 a sum, 1 a weighted mean),
  and ``redundancy = redundancy_scale·Σ_{i<j} max(cos(z_i, z_j) − redundancy_threshold, 0)``
  (similar demonstrations help less). The value saturates: ``value = cap·tanh(total/cap)``.
  So choosing a *set* matters, order matters, and more shots can hurt.
- **The VLM** answers with the consensus answer with probability ``p = σ(value − b_q)`` (b_q the
  query's difficulty: some queries are hopeless, some easy), else with an alternative answer
  with probability ``alt_rate_q`` (partial annotator agreement), else wrongly. The VQA accuracy
  label is ``level_main_q``, ``level_alt_q`` or 0, from {0, 0.3, 0.6, 0.9, 1.0}; ``correct`` =
  acc > 0. So the exact expected accuracy is
  ``p·level_main_q + (1 − p)·alt_rate_q·level_alt_q`` (:func:`oracle_accuracy`).
- **Pools**: K_q candidates per query (most 64, some fewer), three quarters nearest in the
  observed embedding space, the rest random, shuffled.
- **Trajectories** (S positions each), like the original's RL data: beam search with a noisy
  selector, temperature samples from it, similarity retrieval (top S), random choices,
  de-duplicated; M_q between ``min_trajectories`` and ``max_trajectories``. The difficulty
  offset is calibrated so that about ``positive_ratio`` of the labelled trajectories are
  positive.
- **Splits**: ``num_queries`` queries get the reference split (sorted ids, first 80% train, the
  rest val); ``num_test_queries`` further queries form the test split.

**Presets** (:data:`PRESETS`, ``--preset``) set the value model's parameters, the world's shape and
the sizes. ``okvqa`` (the default) and ``vqav2`` are calibrated so that a trained selector shows what
the reports saw on real data (``python -m leverjax.data.calibrate``); ``v1`` is generator version 1,
on which a trained selector is no better than similarity retrieval.

The ground truth is stored in ``oracle_*`` arrays (per example: latent, quality, difficulty,
level_main, level_alt, alt_rate; and params) so that any selection can be scored exactly.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import time
from typing import Any, Mapping

import numpy as np

import leverjax
from leverjax.data.npz import Dataset, dataset_from_arrays, dataset_to_arrays, load_npz, save_npz
from leverjax.errors import ConfigError, DataError

# 7: vqav2's interaction diluted over the prompt's demonstrations; 6: vqav2 with pools of 24 and its recipe;
# 5: vqav2 at the real sizes; 4: okvqa at the real sizes, the answer seed; 3: interaction
GENERATOR_VERSION = 7
GEN_METHODS = ("beam", "sample", "retrieval", "random")
ACC_LEVELS = (0.0, 0.3, 0.6, 0.9, 1.0)
PARAM_NAMES = (
    "rel_scale", "rel_center", "position_decay", "redundancy_scale", "redundancy_threshold",
    "value_cap", "shot_cost", "shot_norm",
)
WORLD_NAMES = (
    "cluster_spread", "nuisance_weight", "noise_weight", "quality_weight", "quality_spread", "quality_directions",
    "hopeless_share", "easy_share", "selector_noise", "interaction_weight", "interaction_dilution",
)
SIZE_NAMES = (
    "num_examples", "num_queries", "num_test_queries", "pool_size", "num_steps", "max_trajectories",
    "min_trajectories", "dim", "latent_dim", "num_clusters", "positive_ratio",
)

# Version 1 of the generator (before the presets): kept as the base every preset starts from.
_V1_PARAMS = {
    "rel_scale": 2.5, "rel_center": 0.3, "position_decay": 0.8, "redundancy_scale": 2.0,
    "redundancy_threshold": 0.55, "value_cap": 2.5, "shot_cost": 0.15, "shot_norm": 0.0,
}
_V1_WORLD = {
    "cluster_spread": 0.8,     # norm of the within-cluster latent noise (before normalising)
    "nuisance_weight": 0.6,    # weight of the nuisance view (style) in the observed embedding
    "noise_weight": 0.6,       # weight of isotropic noise in the observed embedding
    "quality_weight": 1.0,     # weight of the latent quality direction in a demonstration's quality
    "quality_spread": 0.2,     # std of the quality's idiosyncratic part
    "quality_directions": 1,   # 1: quality is one latent direction; k > 1: cluster c uses direction c mod k
    "hopeless_share": 0.08,    # share of hopeless queries (difficulty + 6)
    "easy_share": 0.08,        # share of easy queries (difficulty − 6)
    "selector_noise": 0.5,     # noise of the simulated selector's utility estimates (beam and samples)
    "interaction_weight": 0.0,  # scale of the hidden query-demonstration interaction z_q·A·z_j (0: none)
    "interaction_dilution": 0.0,  # β: in a prompt of n demonstrations each one's interaction counts n^−β (0: fully)
}
_V1_SIZES = {
    "num_examples": 9009, "num_queries": 800, "num_test_queries": 200, "pool_size": 64, "num_steps": 2,
    "max_trajectories": 16, "min_trajectories": 5, "dim": 512, "latent_dim": 24, "num_clusters": 12,
    "positive_ratio": 0.5,
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named simulator setting: the value model's parameters, the world's shape and the sizes.

    ``recipe``: the training settings (config field → value) the preset is calibrated under, where they differ
    from the defaults; the calibration trains with them, and a run on the preset's data that differs is told."""

    name: str
    description: str
    params: Mapping[str, float]
    world: Mapping[str, float]
    sizes: Mapping[str, Any]
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _preset(name: str, description: str, params=None, world=None, sizes=None, recipe=None) -> Preset:
    return Preset(name, description, {**_V1_PARAMS, **(params or {})}, {**_V1_WORLD, **(world or {})},
                  {**_V1_SIZES, **(sizes or {})}, dict(recipe or {}))


# Calibrated against the reports' phenomena (leverjax.data.calibrate; README "Calibration").
PRESETS = {
    "okvqa": _preset(
        "okvqa", "OKVQA-like, at the real tables' sizes: a trained selector a few points above random "
        "demonstrations and slightly above similarity retrieval, a nearly flat 1-4-shot curve, random's falling",
        params={"rel_scale": 0.08, "shot_norm": 0.0, "shot_cost": 0.065, "value_cap": 0.6, "redundancy_scale": 0.03},
        world={"quality_weight": 0.4, "quality_spread": 0.03, "nuisance_weight": 1.2, "selector_noise": 0.06},
        sizes={"positive_ratio": 0.55}),
    "vqav2": _preset(
        "vqav2", "VQAv2-like, at the real tables' sizes: higher accuracy, a trained selector a few points above "
        "random demonstrations and retrieval, a falling 1-4-shot curve, learning that more queries improve",
        params={"rel_scale": 1.5, "value_cap": 1.0, "shot_norm": 1.0, "position_decay": 0.4, "shot_cost": 0.3,
                "redundancy_scale": 0.05},
        world={"quality_weight": 0.2, "nuisance_weight": 1.2, "quality_directions": 4, "noise_weight": 0.3,
               "interaction_weight": 8.0, "interaction_dilution": 1.0},
        sizes={"positive_ratio": 0.75, "num_queries": 200, "pool_size": 24, "max_trajectories": 16,
               "min_trajectories": 3},
        recipe={"rce_batch_size": 1}),
    "v1": _preset("v1", "generator version 1 (before the presets): retrieval is as good as a trained selector"),
}
DEFAULT_PRESET = "okvqa"
DEFAULT_PARAMS = dict(PRESETS[DEFAULT_PRESET].params)


def get_preset(name: str) -> Preset:
    """The preset ``name``; an unknown name raises :class:`ConfigError` naming the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown synthetic data preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


# Fixed world shape (the same in every preset).
_NUISANCE_DIM = 16
_HARD_SHIFT = 6.0
_NEAR_SHARE = 0.75         # share of a pool retrieved by similarity, the rest random
_FULL_POOL_SHARE = 0.85    # share of queries whose pool is full (K), the rest ragged
_BEAM_WIDTH = 6
_SAMPLE_TEMPERATURES = (0.3, 0.6)
_MAX_SAMPLES, _MAX_RANDOM = 8, 8
_MISSING_SHARE = 0.03      # share of gt_prob / rel left unknown (NaN)


# --------------------------------------------------------------------------------------------
# The ground truth (shared by the generator in numpy and the oracle in jax.numpy)
# --------------------------------------------------------------------------------------------


def _utility(xp, params, zq, zd, quality, interaction=None, dilution=None, shots=1):
    """Per-demonstration utility ``rel_scale·(cos − rel_center) + quality (+ z_q·A·z_j·shots^−dilution)``
    [..., n] of the demonstrations with latents ``zd`` [..., n, k] (qualities ``quality`` [..., n]) for queries
    ``zq`` [..., k], in a prompt of ``shots`` demonstrations."""
    util = params[0] * (xp.einsum("...k,...nk->...n", zq, zd) - params[1]) + quality
    if interaction is not None:  # a trace-time branch: presets without the interaction store no matrix
        extra = xp.einsum("...k,kl,...nl->...n", zq, interaction, zd)
        if dilution is not None:  # also a trace-time branch
            extra = extra * xp.power(xp.asarray(float(shots), extra.dtype), -dilution)
        util = util + extra
    return util


def _set_total(xp, latent, quality, params, query_rows, demo_rows, interaction=None, dilution=None):
    """Pre-saturation value of demonstrations ``demo_rows`` [B, n] (prompt order) for ``query_rows`` [B]."""
    n = demo_rows.shape[-1]
    zq = latent[query_rows]
    zd = latent[demo_rows]
    util = _utility(xp, params, zq, zd, quality[demo_rows], interaction, dilution, n)
    weights = params[2] ** xp.arange(n - 1, -1, -1, dtype=zq.dtype)
    # shot_norm α: Σ w·u / (Σ w)^α (0: a sum, generator version 1; 1: a weighted mean). Parameter vectors of
    # version 1 have no α (the length is static, so this is a trace-time branch).
    norm = xp.sum(weights) ** params[7] if params.shape[0] > 7 else 1.0
    sim = xp.einsum("bik,bjk->bij", zd, zd)
    upper = xp.triu(xp.ones((n, n), dtype=zq.dtype), 1)
    redundancy = params[3] * xp.sum(upper * xp.maximum(sim - params[4], 0.0), axis=(-2, -1))
    return xp.sum(weights * util, axis=-1) / norm - redundancy - params[6] * (n - 1)


def _saturate(xp, total, params):
    """The saturating value ``cap·tanh(total/cap)``."""
    return params[5] * xp.tanh(total / params[5])


def _sigmoid(xp, x):
    """σ(x), computed stably as (1 + tanh(x/2))/2."""
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def _expected_acc(xp, p, level_main, level_alt, alt_rate):
    """E[acc] given the probability p of the consensus answer."""
    return p * level_main + (1.0 - p) * alt_rate * level_alt


_GOLDEN = 0x9E3779B9


def _mix32(xp, h):
    """The murmur3 finaliser on uint32 arrays (wrapping arithmetic, the same in numpy and jax.numpy)."""
    h = h ^ (h >> 16)
    h = h * xp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * xp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _answer_uniform(xp, seed, query_rows, demo_rows):
    """A uniform number in [0, 1) per (seed, query row, ordered demonstration rows): a hash, so the same
    prompt always gets the same number, in numpy and in jax alike. float32 [B]."""
    q = xp.asarray(query_rows).astype(xp.uint32)
    h = _mix32(xp, xp.broadcast_to(xp.asarray(seed).astype(xp.uint32), q.shape) ^ xp.uint32(_GOLDEN))
    h = _mix32(xp, h ^ q)
    d = xp.asarray(demo_rows).astype(xp.uint32)
    for t in range(d.shape[-1]):
        h = _mix32(xp, (h + xp.uint32(_GOLDEN)) ^ d[..., t])
    return (h >> 8).astype(xp.float32) * xp.float32(1.0 / (1 << 24))


def _realised(xp, u, p, level_main, level_alt, alt_rate):
    """The VQA score of the answer drawn by ``u``: the consensus answer (``level_main``) with probability p,
    else the alternative (``level_alt``) with probability ``alt_rate``, else a wrong one (0)."""
    return xp.where(u < p, level_main, xp.where(u < p + (1.0 - p) * alt_rate, level_alt, 0.0))


def has_realised(oracle: Mapping[str, Any]) -> bool:
    """Whether ``oracle`` can give realised scores (files of generator version 4 on; earlier ones have no
    answer seed)."""
    return "answer_seed" in oracle


def realised_accuracy(oracle: Mapping[str, Any], query_rows, demo_rows):
    """The VQA score a VLM's one answer gets when shown ``demo_rows`` [B, n] for ``query_rows`` [B]: what a
    researcher running the model sees, where :func:`oracle_accuracy` is its expectation.

    The answer is drawn deterministically from (the world's answer seed, the query, the ordered
    demonstrations): the same prompt always scores the same, like a greedy-decoding VLM, and a different
    selection draws afresh. Scores are 0, ``level_alt`` or ``level_main`` (the 10-annotator VQA values).
    Over answer seeds the mean is the expected accuracy. Pure ``jax.numpy``, jittable; float32 [B]."""
    import jax.numpy as jnp

    q = jnp.asarray(query_rows)
    p, main, alt, rate = _answer_model(jnp, oracle, q, jnp.asarray(demo_rows))
    u = _answer_uniform(jnp, jnp.asarray(oracle["answer_seed"]), q, demo_rows)
    return _realised(jnp, u, p, main, alt, rate)


def realised_accuracy_np(oracle: Mapping[str, np.ndarray], query_rows, demo_rows) -> np.ndarray:
    """:func:`realised_accuracy` in numpy (host side, same draws), float32 [B]."""
    q = np.asarray(query_rows)
    p, main, alt, rate = _answer_model(np, oracle, q, np.asarray(demo_rows))
    u = _answer_uniform(np, np.asarray(oracle["answer_seed"]), q, np.asarray(demo_rows))
    return _realised(np, u, p, main, alt, rate).astype(np.float32)


def _answer_model(xp, oracle, q, d):
    """(p, level_main, level_alt, alt_rate) [B] of the prompts (``xp``'s float32)."""
    f32 = xp.float32
    params = xp.asarray(oracle["params"], f32)
    interaction = oracle.get("interaction")
    interaction = None if interaction is None else xp.asarray(interaction, f32)
    dilution = oracle.get("interaction_dilution")
    dilution = None if dilution is None else xp.asarray(dilution, f32)
    total = _set_total(xp, xp.asarray(oracle["latent"], f32), xp.asarray(oracle["quality"], f32), params, q, d,
                       interaction, dilution)
    p = _sigmoid(xp, _saturate(xp, total, params) - xp.asarray(oracle["difficulty"], f32)[q])
    return (p, xp.asarray(oracle["level_main"], f32)[q], xp.asarray(oracle["level_alt"], f32)[q],
            xp.asarray(oracle["alt_rate"], f32)[q])


def oracle_accuracy(oracle: Mapping[str, Any], query_rows, demo_rows):
    """Exact expected VQA accuracy of showing ``demo_rows`` [B, n] to ``query_rows`` [B].

    Rows are global rows of ``emb``; demonstrations are in prompt order, n is typically 1..4 (any
    n ≥ 1 works). No sampling: the expectation over the label distribution is closed-form. Pure
    ``jax.numpy``, jittable and vmappable; ``oracle`` is ``Dataset.oracle`` (numpy or jax arrays).
    Rows must be valid (no −1 padding: jax would silently wrap it). Returns float32 [B].
    """
    import jax.numpy as jnp

    return _expected_acc(jnp, *_answer_model(jnp, oracle, jnp.asarray(query_rows), jnp.asarray(demo_rows)))


def oracle_accuracy_np(oracle: Mapping[str, np.ndarray], query_rows, demo_rows) -> np.ndarray:
    """:func:`oracle_accuracy` in numpy (host side, same formula), float32 [B]."""
    p, main, alt, rate = _answer_model(np, oracle, np.asarray(query_rows), np.asarray(demo_rows))
    return _expected_acc(np, p, main, alt, rate).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _make_world(rng: np.random.Generator, n: int, dim: int, latent_dim: int, clusters: int,
                w: Mapping[str, float]) -> dict:
    """Latent skills, qualities, difficulties, answer levels and the observed embeddings of n examples
    (``w``: the preset's world shape)."""
    centers = _unit_rows(rng.standard_normal((clusters, latent_dim)))
    cluster = rng.integers(clusters, size=n)
    noise = rng.standard_normal((n, latent_dim)) * (w["cluster_spread"] / math.sqrt(latent_dim))
    latent = _unit_rows(centers[cluster] + noise)
    k = int(w["quality_directions"])
    directions = _unit_rows(rng.standard_normal((max(k, 1), latent_dim)))
    along = latent @ directions[0] if k <= 1 else np.einsum("nk,nk->n", latent, directions[cluster % k])
    quality = w["quality_weight"] * along + w["quality_spread"] * rng.standard_normal(n)
    hopeless, easy = w["hopeless_share"], w["easy_share"]
    kind = rng.choice(3, size=n, p=[1.0 - hopeless - easy, hopeless, easy])
    difficulty = rng.standard_normal(n) + np.select([kind == 1, kind == 2], [_HARD_SHIFT, -_HARD_SHIFT], 0.0)
    level_main = rng.choice([1.0, 0.9, 0.6], size=n, p=[0.75, 0.15, 0.10])
    level_alt = rng.choice([0.3, 0.6, 0.9], size=n, p=[0.6, 0.3, 0.1])
    alt_rate = rng.beta(0.6, 5.0, size=n)

    mixing = rng.standard_normal((latent_dim, dim))
    nuisance = _unit_rows(rng.standard_normal((n, _NUISANCE_DIM))) @ rng.standard_normal((_NUISANCE_DIM, dim))
    emb = latent @ mixing + w["nuisance_weight"] * nuisance + w["noise_weight"] * rng.standard_normal((n, dim))
    f32 = np.float32
    # A hidden interaction (drawn last, so worlds without it are those of earlier versions): z_q·A·z_j has
    # standard deviation interaction_weight for random unit latents; similarity does not see it, and a
    # selector learns it only from the queries it is trained on.
    weight = float(w.get("interaction_weight", 0.0))
    extra = {"interaction": (weight * rng.standard_normal((latent_dim, latent_dim))).astype(f32)} if weight else {}
    dilution = float(w.get("interaction_dilution", 0.0))
    if weight and dilution:  # a prompt of n demonstrations shows each one's interaction scaled by n^−dilution
        extra["interaction_dilution"] = np.asarray(dilution, f32)
    return {
        **extra,
        "emb": _unit_rows(emb),
        "latent": latent,
        "quality": quality.astype(f32),
        "difficulty": difficulty.astype(f32),
        "level_main": level_main.astype(f32),
        "level_alt": level_alt.astype(f32),
        "alt_rate": alt_rate.astype(f32),
    }


def _make_pools(
    rng: np.random.Generator, emb: np.ndarray, query_rows: np.ndarray, pool_size: int, min_pool: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pools [Q, K] (−1 padded, shuffled) and the query–candidate embedding cosines [Q, K]."""
    n = emb.shape[0]
    q = query_rows.shape[0]
    sims = emb[query_rows] @ emb.T
    sims[np.arange(q), query_rows] = -np.inf
    near = np.argpartition(-sims, pool_size - 1, axis=1)[:, :pool_size]
    near = np.take_along_axis(near, np.argsort(-np.take_along_axis(sims, near, 1), axis=1, kind="stable"), 1)
    full = rng.random(q) < _FULL_POOL_SHARE
    sizes = np.where(full, pool_size, rng.integers(min_pool, pool_size + 1, size=q))
    pools = np.full((q, pool_size), -1, np.int32)
    for i in range(q):
        k = int(sizes[i])
        n_near = int(round(_NEAR_SHARE * k))
        chosen = near[i, :n_near]
        taken = set(chosen.tolist()) | {int(query_rows[i])}
        extra = [int(j) for j in rng.choice(n, size=min(n, 2 * k + 4), replace=False) if int(j) not in taken]
        members = np.concatenate([chosen, np.asarray(extra[: k - n_near], np.int64)])
        pools[i, :k] = members[rng.permutation(k)]
    cos = np.take_along_axis(sims, np.maximum(pools, 0), axis=1)
    cos[pools < 0] = -np.inf
    return pools, cos.astype(np.float32)


def _beam_search(
    util: np.ndarray, sim: np.ndarray, valid: np.ndarray, weights: np.ndarray,
    redundancy_scale: float, redundancy_threshold: float, width: int,
) -> np.ndarray:
    """Top-``width`` ordered selections [Q, width, S] under the selector's additive set score."""
    q, k = util.shape
    steps = weights.shape[0]
    score0 = np.where(valid, weights[0] * util, -np.inf)
    first = np.argsort(-score0, axis=1, kind="stable")[:, :width]
    seqs = first[:, :, None]
    scores = np.take_along_axis(score0, first, 1)
    rows = np.arange(q)[:, None, None]
    for t in range(1, steps):
        b = seqs.shape[1]
        used = np.zeros((q, b, k), bool)
        red = np.zeros((q, b, k), np.float32)
        for i in range(t):
            used[rows[:, :, 0], np.arange(b)[None, :], seqs[:, :, i]] = True
            red += np.maximum(sim[rows, seqs[:, :, i][:, :, None], np.arange(k)[None, None, :]] - redundancy_threshold, 0.0)
        cand = scores[:, :, None] + weights[t] * util[:, None, :] - redundancy_scale * red
        cand = np.where(valid[:, None, :] & ~used, cand, -np.inf).reshape(q, b * k)
        top = np.argsort(-cand, axis=1, kind="stable")[:, :width]
        parent, nxt = top // k, top % k
        seqs = np.concatenate([np.take_along_axis(seqs, parent[:, :, None], 1), nxt[:, :, None]], axis=2)
        scores = np.take_along_axis(cand, top, 1)
    return seqs


def _gumbel_topk(rng: np.random.Generator, logits: np.ndarray, valid: np.ndarray, draws: int, steps: int) -> np.ndarray:
    """``draws`` samples [Q, draws, S] without replacement from softmax(logits) (Gumbel top-S)."""
    q, k = logits.shape
    keys = logits[:, None, :] + rng.gumbel(size=(q, draws, k))
    keys = np.where(valid[:, None, :], keys, -np.inf)
    return np.argsort(-keys, axis=2, kind="stable")[:, :, :steps]


def _assemble(
    rng: np.random.Generator, cands: np.ndarray, methods: np.ndarray, include: np.ndarray,
    valid: np.ndarray, max_traj: int, min_traj: int, steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the included candidates de-duplicated, cut to ``max_traj``, topped up with random ones.

    Returns traj [Q, M, S] and gen_method [Q, M], both −1 padded.
    """
    q = cands.shape[0]
    traj = np.full((q, max_traj, steps), -1, np.int32)
    gen = np.full((q, max_traj), -1, np.int8)
    random_code = GEN_METHODS.index("random")
    for i in range(q):
        seen: set[tuple] = set()
        rows: list[tuple[tuple, int]] = []
        for c in np.flatnonzero(include[i]):
            t = tuple(int(x) for x in cands[i, c])
            if t not in seen:
                seen.add(t)
                rows.append((t, int(methods[c])))
        if len(rows) > max_traj:
            keep = np.sort(rng.choice(len(rows), size=max_traj, replace=False))
            rows = [rows[j] for j in keep]
        positions = np.flatnonzero(valid[i])
        while len(rows) < min_traj:
            t = tuple(int(x) for x in rng.choice(positions, size=steps, replace=False))
            if t not in seen:
                seen.add(t)
                rows.append((t, random_code))
        traj[i, : len(rows)] = [t for t, _ in rows]
        gen[i, : len(rows)] = [g for _, g in rows]
    return traj, gen


def _calibrate_offset(value: np.ndarray, diff: np.ndarray, alt_rate: np.ndarray, target: float) -> float:
    """The difficulty offset δ with mean P(correct) = target over the given trajectories (bisection)."""
    lo, hi = -40.0, 40.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        p = _sigmoid(np, value - diff - mid)
        pos = np.mean(p + (1.0 - p) * alt_rate)
        if pos > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _candidate_trajectories(
    r_sel: np.random.Generator, r_mix: np.random.Generator, latent: np.ndarray, quality: np.ndarray,
    params: np.ndarray, query_rows: np.ndarray, pools: np.ndarray, cos_obs: np.ndarray, steps: int,
    selector_noise: float, interaction: np.ndarray | None = None, dilution: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate trajectories of every generation method, and which of them each query keeps.

    The simulated selector knows the true per-demonstration utility up to noise and the true
    redundancy. Returns positions [Q, C, S], the method code of each column [C] and the
    inclusion mask [Q, C] (3–6 beams, the retrieval, 0–8 samples, 1–8 random choices per query).
    """
    q = query_rows.shape[0]
    valid = pools >= 0
    safe = np.maximum(pools, 0)
    z_pool = latent[safe]
    util = _utility(np, params, latent[query_rows], z_pool, quality[safe], interaction, dilution, steps)
    belief = (util + selector_noise * r_sel.standard_normal(util.shape)).astype(np.float32)
    sim = np.einsum("qik,qjk->qij", z_pool, z_pool)
    weights = params[2] ** np.arange(steps - 1, -1, -1, dtype=np.float32)
    beam = _beam_search(belief, sim, valid, weights, float(params[3]), float(params[4]), _BEAM_WIDTH)
    retrieval = np.argsort(-cos_obs, axis=1, kind="stable")[:, None, :steps]
    half = _MAX_SAMPLES // 2
    samples = np.concatenate([
        _gumbel_topk(r_sel, belief / _SAMPLE_TEMPERATURES[0], valid, half, steps),
        _gumbel_topk(r_sel, belief / _SAMPLE_TEMPERATURES[1], valid, _MAX_SAMPLES - half, steps),
    ], axis=1)
    randoms = _gumbel_topk(r_sel, np.zeros_like(belief), valid, _MAX_RANDOM, steps)
    cands = np.concatenate([beam, retrieval, samples, randoms], axis=1)
    code = {name: i for i, name in enumerate(GEN_METHODS)}
    methods = np.concatenate([
        np.full(_BEAM_WIDTH, code["beam"]), [code["retrieval"]],
        np.full(_MAX_SAMPLES, code["sample"]), np.full(_MAX_RANDOM, code["random"]),
    ]).astype(np.int8)
    slot = np.arange(cands.shape[1])[None, :]
    n_beam = r_mix.integers(3, _BEAM_WIDTH + 1, size=(q, 1))
    n_samp = r_mix.integers(0, _MAX_SAMPLES + 1, size=(q, 1))
    n_rand = r_mix.integers(1, _MAX_RANDOM + 1, size=(q, 1))
    first_sample, first_random = _BEAM_WIDTH + 1, _BEAM_WIDTH + 1 + _MAX_SAMPLES
    include = (
        (slot < n_beam)
        | (slot == _BEAM_WIDTH)
        | ((slot >= first_sample) & (slot < first_sample + n_samp))
        | ((slot >= first_random) & (slot < first_random + n_rand))
    )
    return cands, methods, include


def _labels(
    rng: np.random.Generator, world: Mapping[str, np.ndarray], params: np.ndarray,
    query_rows: np.ndarray, pools: np.ndarray, traj: np.ndarray, positive_ratio: float,
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Sampled labels of the trajectories, the calibrated difficulties and the offset applied.

    Labels: acc from the answer model, correct = acc > 0, gt_prob (a noisy view of the success
    probability, up to 1.3) and rel (near 1 for a hit, partial similarity otherwise), each with
    a few unknown (NaN) entries. Padded entries: acc = correct = 0, gt_prob = rel = NaN.
    """
    q, m, steps = traj.shape
    tmask = traj[..., 0] >= 0
    safe = np.maximum(pools, 0)
    demo = np.take_along_axis(safe, np.maximum(traj, 0).reshape(q, -1), 1).reshape(-1, steps)
    total = _set_total(np, world["latent"], world["quality"], params, np.repeat(query_rows, m), demo,
                       world.get("interaction"), world.get("interaction_dilution"))
    value = _saturate(np, total, params).reshape(q, m)
    per_query = {k: world[k][query_rows][:, None] for k in ("difficulty", "alt_rate", "level_main", "level_alt")}
    labelled = {k: np.broadcast_to(v, value.shape)[tmask] for k, v in per_query.items()}
    offset = _calibrate_offset(value[tmask], labelled["difficulty"], labelled["alt_rate"], positive_ratio)
    difficulty = (world["difficulty"] + offset).astype(np.float32)
    logit = value - difficulty[query_rows][:, None]
    p = _sigmoid(np, logit)
    u = rng.random(p.shape)
    main = u < p
    alt = ~main & (u < p + (1.0 - p) * per_query["alt_rate"])
    acc = np.where(main, per_query["level_main"], np.where(alt, per_query["level_alt"], 0.0))
    acc = np.where(tmask, acc, 0.0).astype(np.float32)
    gt_prob = _sigmoid(np, logit + 0.7 * rng.standard_normal(p.shape)) * (1.0 + 0.3 * rng.random(p.shape))
    partial = np.clip(0.1 + 0.5 * p + 0.15 * rng.standard_normal(p.shape), 0.0, 1.0)
    rel = np.where(acc > 0, 1.0 - 0.4 * (1.0 - acc) * rng.random(p.shape), partial)
    gt_prob[(rng.random(p.shape) < _MISSING_SHARE) | ~tmask] = np.nan
    rel[(rng.random(p.shape) < _MISSING_SHARE) | ~tmask] = np.nan
    labels = {
        "acc": acc,
        "correct": (acc > 0).astype(np.float32),
        "gt_prob": gt_prob.astype(np.float32),
        "rel": rel.astype(np.float32),
    }
    return labels, difficulty, float(offset)


def _min_pool(pool_size: int, num_steps: int) -> int:
    """The smallest pool a query may get (ragged pools range from this to ``pool_size``)."""
    return min(pool_size, max(num_steps + 2, int(math.ceil(0.6 * pool_size))))


def _check_options(
    num_examples: int, num_queries: int, num_test_queries: int, pool_size: int, num_steps: int,
    max_trajectories: int, min_trajectories: int, dim: int, latent_dim: int, num_clusters: int,
    positive_ratio: float,
) -> None:
    """Raises :class:`ConfigError` for generator options that cannot make a valid data set."""
    rules = [
        (num_queries >= 2, f"queries = {num_queries} must be >= 2 (train and val need one each)"),
        (num_test_queries >= 0, f"test_queries = {num_test_queries} must be >= 0"),
        (1 <= num_steps <= 8, f"steps = {num_steps} must be between 1 and 8"),
        (pool_size >= num_steps + 2, f"pool = {pool_size} must be >= steps + 2 = {num_steps + 2}"),
        (num_examples > pool_size + 1 and num_examples >= num_queries + num_test_queries,
         f"examples = {num_examples} must exceed pool + 1 = {pool_size + 1} and be >= "
         f"queries + test_queries = {num_queries + num_test_queries}"),
        (1 <= min_trajectories <= max_trajectories,
         f"min_trajectories = {min_trajectories} must be between 1 and trajectories = {max_trajectories}"),
        (dim >= 1 and latent_dim >= 2 and num_clusters >= 1,
         f"dim = {dim}, latent_dim = {latent_dim}, clusters = {num_clusters} must be >= 1, 2, 1"),
        (0.0 < positive_ratio < 1.0, f"positive_ratio = {positive_ratio} must be in (0, 1)"),
    ]
    if all(ok for ok, _ in rules):
        small = _min_pool(pool_size, num_steps)
        rules.append((math.perm(small, num_steps) >= min_trajectories,
                      f"the smallest pools ({small} candidates) allow only {math.perm(small, num_steps)} "
                      f"distinct trajectories, fewer than min_trajectories = {min_trajectories}"))
    for ok, message in rules:
        if not ok:
            raise ConfigError(f"invalid synthetic data option: {message}")


def make_synthetic(
    *,
    preset: str = DEFAULT_PRESET,
    seed: int = 0,
    num_examples: int | None = None,
    num_queries: int | None = None,
    num_test_queries: int | None = None,
    pool_size: int | None = None,
    num_steps: int | None = None,
    max_trajectories: int | None = None,
    min_trajectories: int | None = None,
    dim: int | None = None,
    latent_dim: int | None = None,
    num_clusters: int | None = None,
    positive_ratio: float | None = None,
    params: Mapping[str, float] | None = None,
    world: Mapping[str, float] | None = None,
) -> Dataset:
    """A synthetic data set with ground truth (module docstring), deterministic for ``preset`` and ``seed``.

    Every size left at ``None`` is the preset's (:data:`PRESETS`); ``params`` and ``world`` override some
    of the preset's value-model parameters (:data:`PARAM_NAMES`) and world shape (:data:`WORLD_NAMES`).
    ``num_queries`` queries get the reference train/val split (sorted ids, first 80% train),
    ``num_test_queries`` more form the test split, so Q = num_queries + num_test_queries.
    """
    pre = get_preset(preset)
    given = dict(num_examples=num_examples, num_queries=num_queries, num_test_queries=num_test_queries,
                 pool_size=pool_size, num_steps=num_steps, max_trajectories=max_trajectories,
                 min_trajectories=min_trajectories, dim=dim, latent_dim=latent_dim, num_clusters=num_clusters,
                 positive_ratio=positive_ratio)
    sizes = {k: (pre.sizes[k] if v is None else v) for k, v in given.items()}
    for what, names, extra in (("parameter", PARAM_NAMES, params), ("world option", WORLD_NAMES, world)):
        unknown = sorted(set(extra or {}) - set(names))
        if unknown:
            raise ConfigError(f"unknown synthetic data {what}(s) {', '.join(unknown)}; valid: {', '.join(names)}")
    value_params = {**pre.params, **(params or {})}
    world_shape = {**pre.world, **(world or {})}
    return _generate(pre.name, seed, value_params, world_shape, **sizes)


def _generate(
    preset: str, seed: int, value_params: Mapping[str, float], world_shape: Mapping[str, float], *,
    num_examples: int, num_queries: int, num_test_queries: int, pool_size: int, num_steps: int,
    max_trajectories: int, min_trajectories: int, dim: int, latent_dim: int, num_clusters: int,
    positive_ratio: float,
) -> Dataset:
    """:func:`make_synthetic` with every option resolved."""
    _check_options(num_examples, num_queries, num_test_queries, pool_size, num_steps,
                   max_trajectories, min_trajectories, dim, latent_dim, num_clusters, positive_ratio)
    seeds = np.random.SeedSequence(seed).spawn(6)
    r_world, r_query, r_pool, r_sel, r_mix, r_label = (np.random.default_rng(s) for s in seeds)
    params = np.asarray([value_params[k] for k in PARAM_NAMES], np.float32)

    world = _make_world(r_world, num_examples, dim, latent_dim, num_clusters, world_shape)
    latent, quality = world["latent"], world["quality"]

    rows = r_query.permutation(num_examples)[: num_queries + num_test_queries]
    query_rows = np.concatenate([np.sort(rows[:num_queries]), np.sort(rows[num_queries:])]).astype(np.int32)
    q = query_rows.shape[0]
    n_train = int(num_queries * 0.8)
    split = np.full(q, 2, np.int8)
    split[:n_train] = 0
    split[n_train:num_queries] = 1

    pools, cos_obs = _make_pools(r_pool, world["emb"], query_rows, pool_size, _min_pool(pool_size, num_steps))

    cands, methods, include = _candidate_trajectories(
        r_sel, r_mix, latent, quality, params, query_rows, pools, cos_obs, num_steps,
        float(world_shape["selector_noise"]), world.get("interaction"), world.get("interaction_dilution"))
    traj, gen_method = _assemble(r_mix, cands, methods, include, pools >= 0, max_trajectories,
                                 min_trajectories, num_steps)
    labels, difficulty, offset = _labels(r_label, world, params, query_rows, pools, traj, positive_ratio)

    oracle = {
        "latent": latent,
        "quality": quality,
        "difficulty": difficulty,
        "level_main": world["level_main"],
        "level_alt": world["level_alt"],
        "alt_rate": world["alt_rate"],
        "params": params,
        "answer_seed": np.asarray(seed, np.uint32),  # the VLM's answers to the prompts (realised_accuracy)
        **{k: world[k] for k in ("interaction", "interaction_dilution") if k in world},
    }
    generator = {
        "version": GENERATOR_VERSION, "preset": preset, "seed": seed, "num_examples": num_examples,
        "num_queries": num_queries, "num_test_queries": num_test_queries, "pool_size": pool_size,
        "num_steps": num_steps, "max_trajectories": max_trajectories,
        "min_trajectories": min_trajectories, "dim": dim, "latent_dim": latent_dim,
        "num_clusters": num_clusters, "positive_ratio": positive_ratio,
        "difficulty_offset": round(float(offset), 6),
        "params": {k: float(v) for k, v in zip(PARAM_NAMES, params.tolist())},
        "world": {k: float(world_shape[k]) for k in WORLD_NAMES},
        "recipe": dict(PRESETS[preset].recipe),
    }
    meta = {
        "source": "leverjax.data.synth",
        "encoder": "synthetic (noisy linear view of latent skills)",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": leverjax.__version__,
        "generator": generator,
    }
    ds = Dataset(
        emb=world["emb"], query_ids=query_rows, pool_ids=pools, traj=traj, **labels,
        gen_method=gen_method, gen_methods=GEN_METHODS, split=split, meta=meta, oracle=oracle,
    )
    return dataset_from_arrays(dataset_to_arrays(ds), source="synthetic data")


# --------------------------------------------------------------------------------------------
# The cached default data set
# --------------------------------------------------------------------------------------------


def default_dataset_path() -> str:
    """Cache path of the default synthetic set: ``<repo>/data_cache/synth_default_v<G>.npz``.

    The folder can be moved with the environment variable ``LEVERJAX_DATA_CACHE``.
    """
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    folder = os.environ.get("LEVERJAX_DATA_CACHE") or os.path.join(repo, "data_cache")
    return os.path.join(folder, f"synth_default_v{GENERATOR_VERSION}.npz")


def load_or_make_default(path: str | None = None) -> Dataset:
    """The default synthetic set: loaded from ``path`` (default :func:`default_dataset_path`) if
    a valid copy from this generator version is there, else generated (seconds) and cached."""
    path = path or default_dataset_path()
    if os.path.exists(path):
        try:
            ds = load_npz(path)
            gen = ds.meta.get("generator", {})
            if gen.get("version") == GENERATOR_VERSION and gen.get("preset") == DEFAULT_PRESET and ds.has_oracle:
                return ds
        except DataError:
            pass  # a stale or broken cache file is ours to replace
    ds = make_synthetic()
    save_npz(ds, path)
    return ds


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


_SIZE_FLAGS = (  # command-line flag, make_synthetic option, help
    ("examples", "num_examples", "N, rows of the embedding table."),
    ("queries", "num_queries", "Train+val queries (sorted ids: first 80% train)."),
    ("test_queries", "num_test_queries", "Further queries in the test split."),
    ("pool", "pool_size", "K, candidate pool size per query."),
    ("steps", "num_steps", "S, demonstrations per trajectory."),
    ("trajectories", "max_trajectories", "M, the most labelled trajectories per query."),
    ("min_trajectories", "min_trajectories", "The fewest labelled trajectories per query."),
    ("dim", "dim", "d, embedding width."),
    ("latent_dim", "latent_dim", "Width of the hidden skill vectors."),
    ("clusters", "num_clusters", "Number of skill clusters."),
    ("positive_ratio", "positive_ratio", "Target share of positive (correct) trajectories."),
)


def _cli() -> None:
    from absl import flags

    from leverjax import command as command_lib

    flags.DEFINE_string("out", None, "Output .npz path.", required=True)
    flags.DEFINE_string("preset", DEFAULT_PRESET, "Simulator preset: " + "; ".join(
        f"{p.name}: {p.description}" for p in PRESETS.values()) + ". Sizes not given are the preset's.")
    flags.DEFINE_integer("seed", 0, "Random seed (the data set is deterministic for a preset and seed).")
    sizes = PRESETS[DEFAULT_PRESET].sizes
    for flag, key, text in _SIZE_FLAGS:
        define = flags.DEFINE_float if isinstance(sizes[key], float) else flags.DEFINE_integer
        define(flag, None, f"{text} [default: the preset's; {DEFAULT_PRESET}: {sizes[key]}]")
    FLAGS = flags.FLAGS

    def main(argv: list[str]) -> None:
        start = time.perf_counter()
        ds = make_synthetic(preset=FLAGS.preset, seed=FLAGS.seed,
                            **{key: getattr(FLAGS, flag) for flag, key, _ in _SIZE_FLAGS})
        elapsed = time.perf_counter() - start
        save_npz(ds, FLAGS.out)
        print(describe(ds))
        print(f"generated in {elapsed:.1f} s; wrote {FLAGS.out} ({os.path.getsize(FLAGS.out) / 2**20:.1f} MiB)")

    command_lib.run(main, command='python -m leverjax.data.synth',
                    about='Writes the synthetic data set (with its exact oracle) as a schema-v1 .npz.')


def describe(ds: Dataset) -> str:
    """A few lines that summarise ``ds``: sizes, splits, group sizes and label balance."""
    s = ds.summary()
    sizes = ds.group_sizes
    preset, recipe = preset_recipe(ds)
    return "\n".join([
        (f"preset {preset}; " if preset else "") + f"queries {s['queries']} (train {s['train']}, val {s['val']}, test {s['test']}); "
        f"emb {s['examples']} x {s['dim']}; pool K = {s['pool_size']}; steps S = {s['steps']}",
        f"trajectories {s['trajectories']} (per query {int(sizes.min())}..{int(sizes.max())}, "
        f"mean {sizes.mean():.1f}; M = {s['max_trajectories']}); positive ratio "
        f"{s['positive_ratio']:.3f}; all-negative groups {s['all_negative_groups']}, "
        f"all-positive groups {s['all_positive_groups']}",
    ] + ([f"preset {preset} is calibrated under {recipe_flags(recipe)}: pass it to run.py for the calibrated "
          "effects"] if recipe else []))


def preset_recipe(ds: Dataset) -> tuple[str | None, dict[str, Any]]:
    """The simulator preset ``ds`` was generated from and its recipe (:class:`Preset`); ``(None, {})`` for a
    data set this generator did not write, ``{}`` for a preset without one or a file from before recipes."""
    generator = ds.meta.get("generator")
    if not isinstance(generator, dict):
        return None, {}
    recipe = generator.get("recipe")
    return generator.get("preset"), dict(recipe) if isinstance(recipe, dict) else {}


def recipe_flags(recipe: Mapping[str, Any]) -> str:
    """A preset's recipe as the command-line flags that set it: ``--rce_batch_size=1``."""
    return " ".join(f"--{k}={v}" for k, v in sorted(recipe.items()))


if __name__ == "__main__":
    _cli()
