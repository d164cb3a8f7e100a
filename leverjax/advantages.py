"""Group-relative advantages (docs/reference.md §4), one small registry of estimators.

Every estimator is written for ONE query group (rewards ``[M]`` with a boolean mask ``[M]``) and
vmapped over groups by :func:`group_advantages`. Masked entries get advantage 0, and so does every
member of a degenerate group (one trajectory, all equal, all masked) for every baselined method
(all but ``none``, which returns the raw clipped reward by definition): no input gives NaN.

======== =====================================================================================
method   advantage of trajectory i in a group of n valid trajectories
======== =====================================================================================
zscore   (r_i − mean) / max(std_unbiased, min_std)   — the reference ("scheme 5", GRPO)
rank     1 − 2·rank_i/(n − 1), rank 0 = highest reward (ties by index) — the pre-scheme-5 default
mean     r_i − mean                                     — mean-centred only (Dr. GRPO)
rloo     r_i − mean of the other n − 1 rewards          — leave-one-out baseline
none     r_i                                            — raw rewards
======== =====================================================================================

All are then clipped to ``[−clip, clip]``.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from leverjax.errors import ConfigError

ADVANTAGE_METHODS = ("zscore", "rank", "mean", "rloo", "none")


def _centred(r, mask, n):
    """``r − mean`` over the valid entries, exactly 0 for a flat group.

    The mean is taken around a pivot (the first valid reward): ``r − pivot`` is exactly 0 in a flat
    group, so the centred values are too (a plain ``sum/n`` is not exact in float32, and a flat group
    would get advantages of ~1e-6 instead of 0, or 0/0 in the z-score with ``min_std = 0``).
    """
    pivot = r[jnp.argmax(mask)]
    d = jnp.where(mask, r - pivot, 0.0)
    return d - jnp.sum(d) / jnp.maximum(n, 1.0)


def _zscore(r, mask, n, min_std):
    centred = _centred(r, mask, n)
    var = jnp.sum(jnp.where(mask, centred ** 2, 0.0)) / jnp.maximum(n - 1.0, 1.0)
    # The 1e-12 floor only matters with min_std = 0: a flat group then gives 0/1e-12 = 0, not 0/0.
    return centred / jnp.maximum(jnp.maximum(jnp.sqrt(var), min_std), 1e-12)


def _rank(r, mask, n, min_std):
    del min_std
    # rank 0 = best; masked entries sort last; stable sort breaks ties by index (like argsort).
    order = jnp.argsort(jnp.where(mask, -r, jnp.inf), stable=True)
    rank = jnp.argsort(order, stable=True).astype(r.dtype)
    return jnp.where(n > 1, 1.0 - 2.0 * rank / jnp.maximum(n - 1.0, 1.0), 0.0)


def _mean(r, mask, n, min_std):
    del min_std
    return _centred(r, mask, n)


def _rloo(r, mask, n, min_std):
    del min_std
    # r_i − (Σr − r_i)/(n − 1) = n/(n − 1)·(r_i − mean): the second form is exact for flat groups.
    return jnp.where(n > 1, n / jnp.maximum(n - 1.0, 1.0) * _centred(r, mask, n), 0.0)


def _none(r, mask, n, min_std):
    del mask, n, min_std
    return r


_ESTIMATORS = {"zscore": _zscore, "rank": _rank, "mean": _mean, "rloo": _rloo, "none": _none}


def check_method(method: str) -> None:
    if method not in _ESTIMATORS:
        raise ConfigError(f"unknown advantage method {method!r}; valid: {', '.join(ADVANTAGE_METHODS)}")


def group_advantage(rewards, mask, *, method: str = "zscore", min_std=0.1, clip=5.0):
    """Advantages ``[M]`` of one group of rewards ``[M]`` (0 where ``mask`` is False)."""
    check_method(method)
    rewards = jnp.asarray(rewards, jnp.float32)
    mask = jnp.asarray(mask, bool)
    n = jnp.sum(mask).astype(rewards.dtype)
    adv = _ESTIMATORS[method](jnp.where(mask, rewards, 0.0), mask, n, min_std)
    return jnp.where(mask, jnp.clip(adv, -clip, clip), 0.0)


@functools.partial(jax.jit, static_argnames=("method",))
def group_advantages(rewards, mask, *, method: str = "zscore", min_std=0.1, clip=5.0):
    """Advantages ``[B, M]`` for ``B`` query groups of rewards ``[B, M]`` with a boolean ``mask [B, M]``.

    Computed per group (see the module docstring for each ``method``) and vmapped over groups.
    Masked entries are ignored and returned as 0; degenerate groups give 0, never NaN. ``min_std``
    (the z-score's floor on the unbiased std) and ``clip`` may be traced values.
    """
    def one_group(r, m):
        return group_advantage(r, m, method=method, min_std=min_std, clip=clip)

    return jax.vmap(one_group)(rewards, mask)


def top_k_mask(rewards, mask, k):
    """Keeps the ``k`` highest-reward valid trajectories of each group ``[..., M]`` (ties by index).

    ``k`` may be traced (the GRPO curriculum changes it between epochs).
    """
    order = jnp.argsort(jnp.where(mask, -rewards, jnp.inf), axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)
    return mask & (rank < k)
