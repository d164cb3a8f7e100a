"""Group advantages, top-k and GRPO robustness on hand-computed cases (docs/reference.md §4, §5 defects 3-5).

Expected numbers are written out by hand in each test (with the arithmetic in a comment).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core.advantages import ADVANTAGE_METHODS, group_advantage, group_advantages, top_k_mask
from leverjax.core.losses import grpo_loss
from leverjax.errors import ConfigError

T, F = True, False


def adv(rewards, mask=None, **kw):
    rewards = np.asarray(rewards, np.float32)
    if rewards.ndim == 1:
        rewards = rewards[None]
    mask = np.ones(rewards.shape, bool) if mask is None else np.asarray(mask, bool).reshape(rewards.shape)
    return np.asarray(group_advantages(rewards, mask, **kw))


# -- hand-computed values ------------------------------------------------------------------------------

def test_zscore_by_hand():
    # mean 0.5, unbiased var = 4·0.25/3 = 1/3, std = 0.5773503 → ±0.5/0.5773503 = ±0.8660254
    np.testing.assert_allclose(adv([1, 0, 0, 1]), [[0.8660254, -0.8660254, -0.8660254, 0.8660254]], rtol=1e-6)
    # mean 1.3/3 = 0.4333333; deviations −0.4333333, −0.1333333, 0.5666667; Σd² = 0.5266667;
    # var = 0.2633333, std = 0.5131601 → −0.8444407, −0.2598279, 1.1042687
    np.testing.assert_allclose(adv([0.0, 0.3, 1.0]), [[-0.8444407, -0.2598279, 1.1042687]], rtol=1e-5)
    # std 0.02 < floor 0.1: (r − 0.52)/0.1
    np.testing.assert_allclose(adv([0.5, 0.52, 0.54]), [[-0.2, 0.0, 0.2]], rtol=1e-5, atol=1e-6)
    # a custom floor: std of [0, 1] is 0.7071068 < 2 → ±0.5/2
    np.testing.assert_allclose(adv([0, 1], min_std=2.0), [[-0.25, 0.25]], rtol=1e-6)


def test_rank_by_hand():
    # ranks (0 = best, ties by index): 1.0→0, 0.3(i=0)→1, 0.3(i=2)→2, 0.0→3; A = 1 − 2·rank/3
    np.testing.assert_allclose(adv([0.3, 1.0, 0.3, 0.0], method="rank"), [[1 / 3, 1.0, -1 / 3, -1.0]], rtol=1e-6)
    # the best entry masked: n = 3, ranks 0.3(i=0)→0, 0.3(i=2)→1, 0.0→2; A = 1 − rank
    np.testing.assert_allclose(adv([0.3, 1.0, 0.3, 0.0], [T, F, T, T], method="rank"), [[1.0, 0.0, 0.0, -1.0]],
                               atol=1e-7)
    # two entries: best +1, worst −1, whatever the gap
    np.testing.assert_allclose(adv([0.0, 1e-3], method="rank"), [[-1.0, 1.0]])


def test_mean_rloo_none_by_hand():
    np.testing.assert_allclose(adv([1, 0, 0, 1], method="mean"), [[0.5, -0.5, -0.5, 0.5]], rtol=1e-6)
    # rloo: 1 − (0 + 0.5)/2 = 0.75; 0 − (1 + 0.5)/2 = −0.75; 0.5 − (1 + 0)/2 = 0
    np.testing.assert_allclose(adv([1, 0, 0.5], method="rloo"), [[0.75, -0.75, 0.0]], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(adv([0.3, -7.0, 6.0], method="none"), [[0.3, -5.0, 5.0]], rtol=1e-6)


def test_clip_binds():
    # one success in 30: mean 1/30, std = sqrt(1/30) = 0.1825742; A₀ = (29/30)/0.1825742 = 5.2947 → 5;
    # the others −(1/30)/0.1825742 = −0.1825742. (Defect 4: with n ≤ 26 the ±5 clip can never bind.)
    r = np.zeros(30)
    r[0] = 1.0
    got = adv(r)[0]
    assert got[0] == 5.0
    np.testing.assert_allclose(got[1:], -0.1825742, rtol=1e-5)
    r26 = np.zeros(26)
    r26[0] = 1.0
    assert adv(r26)[0, 0] < 5.0  # (n − 1)/sqrt(n) = 4.9029
    np.testing.assert_allclose(adv([1, 0, 0, 1], method="mean", clip=0.25), [[0.25, -0.25, -0.25, 0.25]])
    np.testing.assert_allclose(adv([1, 0, 0, 0], method="rloo", clip=0.5), [[0.5, -1 / 3, -1 / 3, -1 / 3]],
                               rtol=1e-6)


# -- invariances and masking ------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zscore", "rank", "mean", "rloo"])
def test_invariant_to_adding_a_constant(method):
    rng = np.random.default_rng(0)
    r = rng.choice([0.0, 0.3, 0.6, 0.9, 1.0], size=(16, 6)).astype(np.float32)
    mask = rng.random((16, 6)) < 0.8
    base = adv(r, mask, method=method)
    assert np.abs(base).max() > 0.5  # not trivially zero
    for c in (3.0, -2.5):
        np.testing.assert_allclose(adv(r + c, mask, method=method), base, atol=2e-6)


def test_zscore_invariant_to_scale_above_floor():
    r = np.array([0.0, 0.3, 1.0, 0.6], np.float32)
    np.testing.assert_allclose(adv(2.0 * r), adv(r), rtol=1e-5)


@pytest.mark.parametrize("method", ADVANTAGE_METHODS)
def test_masked_entries_ignored(method):
    r = np.array([[0.2, 0.9, 0.0, 0.5, 0.7]], np.float32)
    mask = np.array([[T, F, T, T, F]])
    base = adv(r, mask, method=method)
    assert base[0, 1] == 0.0 and base[0, 4] == 0.0  # masked outputs are exactly 0
    assert np.any(base[0, mask[0]] != 0.0)
    for junk in (1e6, -1e6, np.nan, np.inf, -np.inf):
        r2 = r.copy()
        r2[0, 1] = r2[0, 4] = junk
        np.testing.assert_array_equal(adv(r2, mask, method=method), base)
    # and equal to the group with the masked entries dropped
    np.testing.assert_allclose(adv(r[:, mask[0]], method=method)[0], base[0, mask[0]], rtol=1e-6)


@pytest.mark.parametrize("min_std", [0.1, 0.0])
@pytest.mark.parametrize("method", ADVANTAGE_METHODS)
def test_degenerate_groups(method, min_std):
    """One trajectory, zero variance, all masked: finite, and 0 for every baselined method (defect 5).

    ``none`` has no baseline by definition: it returns the raw (clipped) reward of every valid entry.
    """
    r = np.array([[0.7, 0.0, 0.0, 0.0],   # one trajectory
                  [0.6, 0.6, 0.6, 0.6],   # zero variance (0.6 is inexact in float32)
                  [0.3, 0.3, 0.3, 0.9],   # zero variance among the valid three
                  [0.5, 0.2, 0.1, 0.9]],  # all masked
                 np.float32)
    mask = np.array([[T, F, F, F], [T, T, T, T], [T, T, T, F], [F, F, F, F]])
    got = adv(r, mask, method=method, min_std=min_std)
    assert np.all(np.isfinite(got))
    if method == "none":
        np.testing.assert_array_equal(got, np.where(mask, r, 0.0))
    elif method == "rank":
        # rank has no degenerate flat case: ties are ranked by index. One trajectory / all masked → 0.
        np.testing.assert_array_equal(got[[0, 3]], 0.0)
        np.testing.assert_allclose(got[1], [1.0, 1 / 3, -1 / 3, -1.0], rtol=1e-6)
    else:
        np.testing.assert_array_equal(got, 0.0)  # exactly 0, not 1e-6


def test_single_group_function_and_traced_hyperparameters():
    r = jnp.array([1.0, 0.0, 0.0, 1.0])
    m = jnp.ones(4, bool)
    np.testing.assert_allclose(group_advantage(r, m), [0.8660254, -0.8660254, -0.8660254, 0.8660254], rtol=1e-6)
    # min_std and clip traced inside jit/vmap: one program for several values
    fn = jax.jit(jax.vmap(lambda s, c: group_advantages(r[None], m[None], min_std=s, clip=c)[0]))
    got = np.asarray(fn(jnp.array([0.1, 1.0, 0.1]), jnp.array([5.0, 5.0, 0.5])))
    np.testing.assert_allclose(got, [[0.8660254, -0.8660254, -0.8660254, 0.8660254],
                                     [0.5, -0.5, -0.5, 0.5],
                                     [0.5, -0.5, -0.5, 0.5]], rtol=1e-6)


def test_unknown_method():
    with pytest.raises(ConfigError, match="unknown advantage method"):
        group_advantages(jnp.zeros((1, 3)), jnp.ones((1, 3), bool), method="gae")


# -- top-k ---------------------------------------------------------------------------------------

def test_top_k_mask_ties():
    top_k = jax.jit(functools.partial(top_k_mask, ties="lowest_index"))  # k traced: one program
    r = jnp.array([[1.0, 0.5, 1.0, 1.0, 0.0]])
    full = jnp.ones((1, 5), bool)
    np.testing.assert_array_equal(top_k(r, full, 2), [[T, F, T, F, F]])  # three-way tie: lowest indices
    np.testing.assert_array_equal(top_k(r, full, 4), [[T, T, T, T, F]])
    # masked entries are never kept, even with the best reward
    m = jnp.array([[F, T, T, T, T]])
    np.testing.assert_array_equal(top_k(r, m, 2), [[F, F, T, T, F]])
    np.testing.assert_array_equal(top_k(r, m, 10), m)  # k ≥ n keeps every valid entry
    np.testing.assert_array_equal(top_k(r, m, 0), [[F] * 5])
    np.testing.assert_array_equal(top_k(r, full, 3), [[T, F, T, T, F]])
    np.testing.assert_array_equal(top_k(r, full, 1), [[T, F, F, F, F]])


def test_top_k_then_zscore_reproduces_defect_3():
    """Top-3 of typical rewards are tied → zero-variance group → all advantages exactly 0."""
    r = jnp.array([[1.0, 0.0, 1.0, 0.3, 1.0, 1.0, 0.6]])
    keep = jax.jit(functools.partial(top_k_mask, ties="lowest_index"))(r, jnp.ones(r.shape, bool), 3)
    np.testing.assert_array_equal(keep, [[T, F, T, F, T, F, F]])
    np.testing.assert_array_equal(group_advantages(r, keep), 0.0)


# -- GRPO never NaN --------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["reference", "k3", "none"])
def test_grpo_one_trajectory_group_and_extreme_ratios_finite(estimator):
    rewards = jnp.array([[0.7, 0.0, 0.0, 0.0],
                         [1.0, 0.0, 0.3, 0.9],
                         [1.0, 0.0, 0.3, 0.9]])
    mask = jnp.array([[T, F, F, F], [T, T, T, T], [T, T, T, F]])
    advantages = group_advantages(rewards, mask)
    assert np.all(np.asarray(advantages)[0] == 0.0)
    logp_ref = jnp.array([[-3.0, 0.0, 0.0, 0.0],
                          [-2.0, -5.0, -1.0, -4.0],
                          [-1e9, -2.0, -3.0, -1.0]])  # −1e9: a log-prob through a padded slot
    logp_new = jnp.array([[-3.5, 0.0, 0.0, 0.0],
                          [1e4, -5.0 - 1e4, -1.0 + 50.0, -4.0 - 50.0],  # log-ratios ±1e4, ±50
                          [-2.0, -1e9, -3.0, 0.0]])

    @jax.jit
    def run(lp):
        def loss(x, rows):
            return grpo_loss(x[rows], logp_ref[rows], advantages[rows], mask[rows], kl_coef=0.1,
                             kl_estimator=estimator)
        grad = jax.grad(lambda x: loss(x, slice(None)).loss)(lp)
        # the one-trajectory group alone: zero advantage, its loss is β·KL of that one trajectory
        return loss(lp, slice(None)), grad, loss(lp, slice(0, 1))

    terms, grad, alone = run(logp_new)
    assert all(np.isfinite(np.asarray(x)) for x in terms), terms
    assert np.all(np.isfinite(np.asarray(grad)))
    assert float(alone.ppo) == 0.0 and np.isfinite(float(alone.loss))
    assert float(terms.clip_fraction) > 0.0  # the extreme ratios are there and clipped


# -- the advantage signals of a step, as the reference prints them -----------------------------------

def test_advantage_stats_are_the_reference_definitions():
    """``adv_std`` is the unbiased std of the step's kept advantages (all queries of the batch pooled),
    like ``advantages.std()`` on the reference's [B, k] tensor; one kept trajectory gives 0, not NaN."""
    from leverjax.core.train import _advantage_stats

    rng = np.random.default_rng(3)
    stats = jax.jit(_advantage_stats)
    for trial in range(20):  # one shape (one compile); the masks vary the batch's groups and sizes
        rewards = rng.choice([0.0, 0.3, 0.6, 1.0, 1.9], size=(4, 8)).astype(np.float32)
        mask = rng.random((4, 8)) < rng.uniform(0.1, 0.9)
        adv = np.asarray(group_advantages(rewards, mask))
        got = {k: float(v) for k, v in stats(adv, rewards, mask).items()}
        kept = adv[mask].astype(np.float64)
        want_std = np.std(kept, ddof=1) if kept.size > 1 else 0.0
        np.testing.assert_allclose(got["adv_std"], want_std, rtol=1e-5, atol=1e-6, err_msg=str(trial))
        np.testing.assert_allclose(got["adv_mean"], kept.mean() if kept.size else 0.0, atol=1e-6)
        np.testing.assert_allclose(got["adv_max_abs"], np.abs(kept).max() if kept.size else 0.0, rtol=1e-6)
    # three kept of one group: exactly the reference's figure, √(3/2) times the population std
    r = np.zeros((4, 8), np.float32)
    r[0, :3] = [1.0, 0.0, 0.3]
    three = np.zeros((4, 8), bool)
    three[0, :3] = True
    a = np.asarray(group_advantages(r, three))
    np.testing.assert_allclose(float(stats(a, r, three)["adv_std"]), np.std(a[0, :3], ddof=0) * np.sqrt(3 / 2),
                               rtol=1e-5)
    one = np.zeros((4, 8), bool)
    one[0, 0] = True
    assert float(stats(a, r, one)["adv_std"]) == 0.0
