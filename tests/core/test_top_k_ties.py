"""Top-k tie rules: ``reference`` keeps what ``torch.topk`` keeps on a CPU, over many tied groups.

The reference trainer calls ``torch.topk`` on each query's valid trajectories; which of equal rewards it
keeps is decided by the C++ standard library's selection algorithm. These tests compare leverjax's
transcription with torch itself on random groups with few distinct reward levels (so most groups have
ties at the boundary), all-equal groups, groups of up to 40 and of 200+ (torch's heap-selection path)
and orders that exhaust the introselect depth limit (its heap-selection fallback).
"""
import functools

import jax
import numpy as np
import pytest

from leverjax.core.advantages import top_k_mask
from leverjax.errors import ConfigError

torch = pytest.importorskip("torch")

_top_k = jax.jit(top_k_mask, static_argnames=("ties",))
ROWS = 1280  # calls on groups of width M are padded to this many: one compiled program per tie rule


def top_k(rewards, mask, k, ties="reference"):
    b = rewards.shape[0]
    pad = ((0, -b % ROWS if rewards.shape[1] == M else 0), (0, 0))
    return np.asarray(_top_k(np.pad(rewards, pad), np.pad(mask, pad), k, ties=ties))[:b]


def torch_kept(rewards, mask, k):
    """The positions torch.topk keeps from each row's valid entries (all of them when k ≥ n)."""
    out = np.zeros(mask.shape, bool)
    for b in range(mask.shape[0]):
        idx = np.flatnonzero(mask[b])
        if k >= len(idx):
            out[b, idx] = True
        elif k > 0:
            out[b, idx[torch.from_numpy(rewards[b, idx]).topk(k).indices.numpy()]] = True
    return out


M = 40  # one program shape for every group of up to 40 (n varies with the mask)


def tied_groups(rng, b):
    """Rewards with 1–4 distinct levels, so most groups have ties at the top-k boundary; every group
    size from 1 to 40 valid trajectories; some all-equal groups."""
    levels = rng.integers(1, 5, size=(b, 1))
    rewards = (rng.integers(0, 12, size=(b, M)) % levels).astype(np.float32) * np.float32(0.3)
    rewards[: b // 8] = 0.5  # all-equal groups
    n = rng.integers(1, M + 1, size=(b, 1))
    mask = np.arange(M)[None, :] < n
    holes = rng.random((b, M)) < 0.1  # invalid trajectories in the middle of some groups
    holes[: b // 2] = False
    return rewards, mask & ~holes


def padded(rows, n=M):
    """Rows of any widths as ``[B, M]`` groups (the rest masked)."""
    out, mask = np.zeros((len(rows), n), np.float32), np.zeros((len(rows), n), bool)
    for b, row in enumerate(rows):
        out[b, : len(row)], mask[b, : len(row)] = row, True
    return out, mask


def test_reference_ties_match_torch_topk():
    rng = np.random.default_rng(0)
    rewards, mask = tied_groups(rng, ROWS)
    differs = 0
    for k in (1, 2, 3, 5):
        got = top_k(rewards, mask, k)
        want = torch_kept(rewards, mask, k)
        bad = np.flatnonzero((got != want).any(-1))
        assert bad.size == 0, (k, rewards[bad[0]].tolist(), mask[bad[0]].tolist(), got[bad[0]], want[bad[0]])
        differs += int((top_k(rewards, mask, k, ties="lowest_index") != want).any(-1).sum())
    assert differs > 500  # the tie rule matters on these groups


def test_reference_ties_examples_depth_limit_and_large_groups():
    # the reference trainer's behaviour on a tie: later indices win
    r, mask = padded([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0] * 10])
    got = top_k(r, mask, 3)
    assert [np.flatnonzero(g).tolist() for g in got] == [[3, 4, 5], [3, 4, 5], [6, 7, 8]]
    np.testing.assert_array_equal(got, torch_kept(r, mask, 3))
    # orders that exhaust the introselect depth limit (2·⌊log2 n⌋ partitions; found by search): torch
    # falls back to a heap selection
    killers = [[2, 1, 5, 13, 20, 17, 3, 23, 12, 19, 9, 14, 0, 16, 8, 22, 15, 7, 21, 10, 11, 6, 4, 18],
               [30, 6, 27, 29, 26, 20, 14, 31, 19, 7, 10, 28, 12, 4, 3, 5, 1, 23, 21, 17, 18, 13, 11, 9, 24, 25,
                16, 22, 15, 8, 2, 0]]
    for row in killers:
        for values in (row, [v // 3 for v in row]):
            r, mask = padded([values])
            for k in (3, 5):
                np.testing.assert_array_equal(top_k(r, mask, k), torch_kept(r, mask, k))
    # n ≥ 64·k: torch uses a heap selection (partial sort) instead of introselect
    rng = np.random.default_rng(1)
    r = (rng.integers(0, 3, size=(4, 200)) * 0.5).astype(np.float32)
    mask = rng.random(r.shape) < 0.98
    for k in (1, 2, 3):
        np.testing.assert_array_equal(top_k(r, mask, k), torch_kept(r, mask, k))


def test_other_tie_rules_and_traced_k():
    r, full = padded([[1.0, 0.5, 1.0, 1.0, 0.0]] * 64)
    np.testing.assert_array_equal(top_k(r, full, 2, ties="lowest_index")[0, :5], [True, False, True, False, False])
    rand = jax.jit(functools.partial(top_k_mask, ties="random"))
    kept = np.asarray(rand(r, full, 2, rng=jax.random.PRNGKey(0)))
    assert (kept.sum(-1) == 2).all() and not kept[:, [1, 4]].any()  # two of the three tied 1.0s
    assert len({tuple(row) for row in kept}) == 3  # every pair of the three occurs over 64 draws
    # k is traced (the curriculum changes it between epochs): the same program for every k
    assert [int(top_k(r, full, k)[0].sum()) for k in (0, 1, 3, 5, 9)] == [0, 1, 3, 5, 5]
    with pytest.raises(ConfigError, match="top-k tie rule"):
        top_k_mask(r, full, 2, ties="first")
    with pytest.raises(ValueError, match="rng"):
        top_k_mask(r, full, 2, ties="random")
