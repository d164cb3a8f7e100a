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


# -- top-k curriculum --------------------------------------------------------------------------------
#
# The reference keeps the top k trajectories of a group with torch.topk on the CPU. torch (2.x, and the
# 1.x releases since its CPU top-k moved to the C++ standard library) selects with
# std::nth_element(first, first + k − 1, last, greater) on (value, index) pairs in their original
# order, then sorts the first k − 1, or, when 64·k ≤ n, with std::partial_sort (a heap selection).
# Which of several equal rewards end up in the top k is whatever these algorithms leave there, and
# that is a property of the standard library. The functions below transcribe the algorithms of
# GCC's libstdc++ (the library of torch's Linux wheels): introselect with median-of-three pivots and
# an unguarded partition, a depth limit of 2·⌊log2 n⌋ partitions that falls back to a heap selection,
# and a final insertion sort of the last few elements. Builds against another standard library
# (libc++ on macOS, MSVC on Windows) can keep other members of a tie.

TOP_K_TIES = ("reference", "lowest_index", "random")


def _swap(v, ix, a, b):
    va, vb, ia, ib = v[a], v[b], ix[a], ix[b]
    return v.at[a].set(vb).at[b].set(va), ix.at[a].set(ib).at[b].set(ia)


def _move_median_to_first(v, ix, result, a, b, c):
    """libstdc++'s __move_median_to_first with the comparison ``x > y``."""
    va, vb, vc = v[a], v[b], v[c]
    pick = jnp.where(va > vb,
                     jnp.where(vb > vc, b, jnp.where(va > vc, c, a)),
                     jnp.where(va > vc, a, jnp.where(vb > vc, c, b)))
    return _swap(v, ix, result, pick)


def _unguarded_partition(v, ix, first, last, pivot, active):
    """libstdc++'s __unguarded_partition: returns (v, ix, cut).

    The scans need no bounds in C++ (the median-of-three pivot stops them inside the range); here they
    are also stopped at the array's ends and when ``active`` is False, because under ``vmap`` a loop
    keeps running its body for groups that have already finished, on their frozen state.
    """
    last_index = v.shape[0] - 1

    def cond(s):
        return ~s[4]

    def body(s):
        v, ix, f, l, _ = s
        f = jax.lax.while_loop(lambda f: active & (f < last_index) & (v[f] > v[pivot]), lambda f: f + 1, f)
        l = jax.lax.while_loop(lambda l: active & (l > 0) & (v[pivot] > v[l]), lambda l: l - 1, l - 1)
        done = f >= l
        v2, ix2 = _swap(v, ix, f, l)
        v = jnp.where(done, v, v2)
        ix = jnp.where(done, ix, ix2)
        return v, ix, jnp.where(done, f, f + 1), l, done

    v, ix, cut, _, _ = jax.lax.while_loop(cond, body, (v, ix, first, last, jnp.bool_(False)))
    return v, ix, cut


def _adjust_heap(v, ix, first, hole, length, value, index):
    """libstdc++'s __adjust_heap (sift the hole down, then push ``value`` up) on ``[first, first+length)``."""
    top = hole

    def down_cond(s):
        return s[3] < (length - 1) // 2

    def down(s):
        v, ix, hole, second = s
        second = 2 * (second + 1)
        second = jnp.where(v[first + second] > v[first + second - 1], second - 1, second)
        v = v.at[first + hole].set(v[first + second])
        ix = ix.at[first + hole].set(ix[first + second])
        return v, ix, second, second

    v, ix, hole, second = jax.lax.while_loop(down_cond, down, (v, ix, hole, hole))
    last_child = ((length & 1) == 0) & (second == (length - 2) // 2)
    child = first + 2 * (second + 1) - 1
    v = jnp.where(last_child, v.at[first + hole].set(v[child]), v)
    ix = jnp.where(last_child, ix.at[first + hole].set(ix[child]), ix)
    hole = jnp.where(last_child, 2 * (second + 1) - 1, hole)

    def up_cond(s):
        v, _, hole = s
        return (hole > top) & (v[first + (hole - 1) // 2] > value)

    def up(s):
        v, ix, hole = s
        parent = (hole - 1) // 2
        return v.at[first + hole].set(v[first + parent]), ix.at[first + hole].set(ix[first + parent]), parent

    v, ix, hole = jax.lax.while_loop(up_cond, up, (v, ix, hole))
    return v.at[first + hole].set(value), ix.at[first + hole].set(index)


def _heap_select(v, ix, first, middle, last):
    """libstdc++'s __heap_select: make a heap of ``[first, middle)``, then let every later element
    that beats its top replace the top."""
    length = middle - first

    def make(j, s):
        v, ix = s
        # ≥ 0: under vmap a group past its own loop bound still runs the body (its result is dropped),
        # and a negative hole would never leave the sift-down loop.
        parent = jnp.maximum((length - 2) // 2 - j, 0)
        return _adjust_heap(v, ix, first, parent, length, v[first + parent], ix[first + parent])

    v, ix = jax.lax.fori_loop(0, jnp.where(length >= 2, (length - 2) // 2 + 1, 0), make, (v, ix))

    def scan(i, s):
        v, ix = s

        def pop(s):
            v, ix = s
            value, index = v[i], ix[i]
            v, ix = v.at[i].set(v[first]), ix.at[i].set(ix[first])
            return _adjust_heap(v, ix, first, 0, length, value, index)

        return jax.lax.cond(v[i] > v[first], pop, lambda s: s, (v, ix))

    return jax.lax.fori_loop(middle, last, scan, (v, ix))


def _stable_sort_range(v, ix, first, last):
    """Sorts ``[first, last)`` by decreasing value, equal values in their current order (what
    libstdc++'s insertion sort does), leaving the rest in place."""
    p = jnp.arange(v.shape[0])
    inside = (p >= first) & (p < last)
    group = jnp.where(p < first, 0, jnp.where(inside, 1, 2))
    order = jnp.lexsort((jnp.where(inside, -v, p.astype(v.dtype)), group))
    return v[order], ix[order]


def _torch_cpu_top_k(values, n, k):
    """Positions (into ``values``) that ``torch.topk(values[:n], k)`` on a CPU returns, as a boolean
    ``[M]`` mask; ``n`` and ``k`` may be traced, ``1 ≤ k < n``."""
    m = values.shape[0]
    v = values + 0.0  # −0.0 → +0.0: the comparisons below treat them as equal, as C++ does
    ix = jnp.arange(m)
    nth = k - 1
    depth0 = 2 * (jnp.floor(jnp.log2(jnp.maximum(n, 1).astype(jnp.float32))).astype(jnp.int32))

    def cond(s):
        _, _, first, last, depth = s
        return (last - first > 3) & (depth > 0)

    def body(s):
        v, ix, first, last, depth = s
        active = (last - first > 3) & (depth > 0)
        mid = first + (last - first) // 2
        v, ix = _move_median_to_first(v, ix, first, first + 1, mid, last - 1)
        v, ix, cut = _unguarded_partition(v, ix, first + 1, last, first, active)
        return v, ix, jnp.where(cut <= nth, cut, first), jnp.where(cut <= nth, last, cut), depth - 1

    sv, six, first, last, depth = jax.lax.while_loop(cond, body, (v, ix, jnp.int32(0), n, depth0))
    partial_sort = k * 64 <= n
    exhausted = (last - first > 3) & (depth == 0)
    hf = jnp.where(partial_sort, 0, first)
    hm = jnp.where(partial_sort, k, nth + 1)
    hl = jnp.where(partial_sort, n, last)
    _, heap_ix = _heap_select(jnp.where(partial_sort, v, sv), jnp.where(partial_sort, ix, six), hf, hm, hl)
    _, sorted_ix = _stable_sort_range(sv, six, first, last)
    final = jnp.where(partial_sort | exhausted, heap_ix, sorted_ix)
    kept_positions = jnp.arange(m) < k
    return jnp.zeros(m, bool).at[final].set(kept_positions)


def top_k_mask(rewards, mask, k, *, ties: str = "reference", rng=None):
    """Keeps the ``k`` highest-reward valid trajectories of each group ``[..., M]``.

    ``k`` may be traced (the GRPO curriculum changes it between epochs). A group with at most ``k``
    valid trajectories keeps them all. ``ties`` says which of equal rewards at the boundary are kept:

    * ``reference``: the ones ``torch.topk`` keeps on a CPU (the reference trainer runs it on each
      query's valid trajectories in index order), reproduced by transcribing the selection algorithm of
      GCC's C++ standard library that torch's Linux builds use (see the comment above). Rewards must not
      be NaN (torch ranks NaN first; leverjax's rewards never are).
    * ``lowest_index``: the lowest trajectory indices.
    * ``random``: uniformly at random (``rng`` is required; one independent draw per group).
    """
    if ties not in TOP_K_TIES:
        raise ConfigError(f"unknown top-k tie rule {ties!r}; valid: {', '.join(TOP_K_TIES)}")
    rewards = jnp.asarray(rewards, jnp.float32)
    mask = jnp.asarray(mask, bool)
    if ties == "reference":
        shape = rewards.shape
        r2, m2 = rewards.reshape(-1, shape[-1]), mask.reshape(-1, shape[-1])

        def one(r, valid):
            n = jnp.sum(valid).astype(jnp.int32)
            # compact the valid entries to the front, in index order (the reference sees only them)
            order = jnp.argsort(~valid, stable=True)
            k_ = jnp.asarray(k, jnp.int32)
            kept = _torch_cpu_top_k(r[order], n, jnp.clip(k_, 1, jnp.maximum(n - 1, 1)))
            keep_compact = jnp.where(k_ >= n, True, jnp.where(k_ <= 0, False, kept))
            return jnp.zeros_like(valid).at[order].set(keep_compact) & valid

        return jax.vmap(one)(r2, m2).reshape(shape)
    if ties == "random":
        if rng is None:
            raise ValueError("top_k_mask(ties='random') needs an rng")
        tiebreak = jax.random.uniform(rng, rewards.shape)
        order = jnp.lexsort((tiebreak, jnp.where(mask, -rewards, jnp.inf)), axis=-1)
    else:
        order = jnp.argsort(jnp.where(mask, -rewards, jnp.inf), axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1, stable=True)
    return mask & (rank < k)
