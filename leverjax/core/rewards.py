"""Trajectory rewards from the stored labels, and their per-query normalisations.

Pure ``jax.numpy``: every function is jittable, the reward weights may be traced scalars (they are
swept under ``vmap``), and ``mode`` / ``method`` are static Python strings. The formulas are the
reference's (h = correct, s = acc, g = gt_prob, r = rel; a missing value, NaN, counts as 0):

=============================  ==============================================
hard_plus_soft (default)       wh·h + ws·s
hard_plus_soft_v2              ws·s + 2·wh·h
separated                      h = 1: 2·wh + ws·s; else ws·s
hard_only / soft_only          wh·h / ws·s
hard01_plus_gtprob             wh·h + ws·g
hard01_plus_gtprob_separated   h = 1: 2·wh + ws·g; else ws·g
hard_plus_gtprob_plus_rel      wh·h + ws·g + wr·(1 − h)·r
=============================  ==============================================

Each reward is clipped to [−5, 5].
"""
from __future__ import annotations

import jax.numpy as jnp

from leverjax.errors import ConfigError

REWARD_MODES = (
    "hard_plus_soft",
    "hard_plus_soft_v2",
    "separated",
    "hard_only",
    "soft_only",
    "hard01_plus_gtprob",
    "hard01_plus_gtprob_separated",
    "hard_plus_gtprob_plus_rel",
)
NORMALIZATIONS = ("z_score_clamp", "z_score", "rank_normalize", "none")

REWARD_CLIP = 5.0
Z_CLAMP = 3.0
STD_EPS = 1e-12


def check_reward_mode(mode: str) -> None:
    """Raises :class:`ConfigError` unless ``mode`` is one of :data:`REWARD_MODES`."""
    if mode not in REWARD_MODES:
        raise ConfigError(f"unknown reward mode '{mode}'; valid modes are {', '.join(REWARD_MODES)}")


def check_normalization(method: str) -> None:
    """Raises :class:`ConfigError` unless ``method`` is one of :data:`NORMALIZATIONS`."""
    if method not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown reward normalisation '{method}'; valid ones are {', '.join(NORMALIZATIONS)}"
        )


def _known(x) -> jnp.ndarray:
    """``x`` as float32 with missing (NaN) entries set to 0."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.where(jnp.isnan(x), 0.0, x)


def raw_rewards(
    correct,
    acc,
    gt_prob,
    rel,
    *,
    mode: str = "hard_plus_soft",
    w_hard=1.0,
    w_soft=1.0,
    w_rel=0.1,
) -> jnp.ndarray:
    """The reward of each trajectory under ``mode`` (table above), clipped to [−5, 5].

    All label arrays share one shape (typically [..., M]); NaN counts as 0, so the result never
    holds NaN. Weights may be Python floats or traced scalars.
    """
    check_reward_mode(mode)
    h, s, g, r = _known(correct), _known(acc), _known(gt_prob), _known(rel)
    is_hit = h > 0.5
    if mode == "hard_plus_soft":
        out = w_hard * h + w_soft * s
    elif mode == "hard_plus_soft_v2":
        out = w_soft * s + 2.0 * w_hard * h
    elif mode == "separated":
        out = jnp.where(is_hit, 2.0 * w_hard + w_soft * s, w_soft * s)
    elif mode == "hard_only":
        out = w_hard * h
    elif mode == "soft_only":
        out = w_soft * s
    elif mode == "hard01_plus_gtprob":
        out = w_hard * h + w_soft * g
    elif mode == "hard01_plus_gtprob_separated":
        out = jnp.where(is_hit, 2.0 * w_hard + w_soft * g, w_soft * g)
    else:  # hard_plus_gtprob_plus_rel
        out = w_hard * h + w_soft * g + w_rel * (1.0 - h) * r
    out = jnp.broadcast_to(jnp.asarray(out, jnp.float32), h.shape)
    return jnp.clip(jnp.nan_to_num(out), -REWARD_CLIP, REWARD_CLIP)


def normalize_rewards(rewards, mask, *, method: str = "z_score_clamp") -> jnp.ndarray:
    """Per-query normalisation of ``rewards`` over the last axis; masked entries become 0.

    - ``z_score_clamp``: (x − mean)/std with the unbiased std, clamped to ±3;
    - ``z_score``: the same without the clamp;
      both apply only where the group has n ≥ 2 and std > 1e-12, else the raw values are kept
      (a flat group or a group of one keeps its rewards, as in the reference);
    - ``rank_normalize``: 1 − 2·rank/(n − 1) with rank 0 the best, ties broken by position
      (the earlier trajectory ranks first); a group of one gets 0;
    - ``none``: the raw values.

    Statistics use only unmasked entries; the result is finite for any input.
    """
    check_normalization(method)
    x = jnp.asarray(rewards, jnp.float32)
    m = jnp.broadcast_to(jnp.asarray(mask, bool), x.shape)
    mf = m.astype(jnp.float32)
    n = mf.sum(axis=-1, keepdims=True)
    if method == "none":
        return jnp.where(m, x, 0.0)
    if method == "rank_normalize":
        key = jnp.where(m, -x, jnp.inf)  # ascending key = descending reward; masked entries last
        order = jnp.argsort(key, axis=-1, stable=True)
        rank = jnp.argsort(order, axis=-1, stable=True).astype(jnp.float32)
        val = 1.0 - 2.0 * rank / jnp.maximum(n - 1.0, 1.0)
        return jnp.where(m & (n > 1.0), val, 0.0)
    # z-scores: shift by a group member first so that a flat group gives exactly zero deviation
    ref = jnp.max(jnp.where(m, x, -jnp.inf), axis=-1, keepdims=True)
    ref = jnp.where(n > 0, ref, 0.0)
    shifted = jnp.where(m, x - ref, 0.0)
    mean = shifted.sum(axis=-1, keepdims=True) / jnp.maximum(n, 1.0)
    dev = jnp.where(m, shifted - mean, 0.0)
    var = (dev * dev).sum(axis=-1, keepdims=True) / jnp.maximum(n - 1.0, 1.0)
    std = jnp.sqrt(var)
    ok = (n >= 2.0) & (std > STD_EPS)
    z = dev / jnp.where(ok, std, 1.0)
    if method == "z_score_clamp":
        z = jnp.clip(z, -Z_CLAMP, Z_CLAMP)
    return jnp.where(m, jnp.where(ok, z, x), 0.0)


def compute_rewards(
    correct,
    acc,
    gt_prob,
    rel,
    mask,
    *,
    mode: str = "hard_plus_soft",
    normalize: str = "z_score_clamp",
    w_hard=1.0,
    w_soft=1.0,
    w_rel=0.1,
) -> jnp.ndarray:
    """Raw rewards under ``mode`` followed by the per-query ``normalize``; masked entries are 0."""
    raw = raw_rewards(correct, acc, gt_prob, rel, mode=mode, w_hard=w_hard, w_soft=w_soft, w_rel=w_rel)
    return normalize_rewards(raw, mask, method=normalize)
