"""Beam search and temperature sampling (leverjax.core.sampling) against exhaustive enumeration, the greedy
decode, the teacher-forced log-probabilities and the softmax's frequencies."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from leverjax.core import sampling
from leverjax.core.model import Selector, init_params, preset_config

D, K, S = 12, 5, 3
PRESETS = ("v4_1", "v4_3", "v4_8", "v4_9", "v4_10")  # gate; GRU + MMR; slots; refine; STOP


def _perturb(params, key, scale=0.3):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _setup(preset: str, temperature: float = 0.5):
    config = preset_config(preset, S, hidden=8, num_heads=1, dropout=0.0, attn_dropout=0.0, temperature=temperature)
    params = _perturb(init_params(config, jax.random.PRNGKey(0), D, pool_size=K, num_steps=S), jax.random.PRNGKey(1))
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, D)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, K, D)), jnp.float32)
    mask = jnp.asarray(np.arange(K)[None, :] < np.array([[K], [4]]))  # a full pool and a ragged one
    return Selector(config), params, q, c, mask


def _all_sequences(valid: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(valid), S)), np.int32)


def _fixed_shot_log_probs(sel, params, q, c, mask, seqs, tau: float = 1.0) -> np.ndarray:
    """Teacher-forced log-probabilities of ``seqs [M, S]`` (one query) under softmax(logits / τ), with STOP
    left out of every step's softmax (what a fixed number of demonstrations means for a STOP selector)."""
    step = np.asarray(sel.step_log_probs(params, q, c, mask, jnp.asarray(seqs)[None]), np.float64)[0]  # [M, S, K']
    step = step[..., :K] / tau  # log-probs are the logits up to a constant per step
    step = step - np.logaddexp.reduce(step, axis=-1, keepdims=True)
    return np.take_along_axis(step, seqs[..., None], -1)[..., 0].sum(-1)


@pytest.mark.parametrize("preset", PRESETS)
def test_beam_search_is_exhaustive_search_when_the_beam_holds_every_sequence(preset):
    sel, params, q, c, mask = _setup(preset)
    width = K * (K - 1) * (K - 2)
    picks, score = jax.jit(lambda p: sampling.beam_search(sel, p, q, c, mask, S, width))(params)
    picks, score = np.asarray(picks), np.asarray(score)
    for b, valid in enumerate((K, 4)):
        seqs = _all_sequences(valid)
        teacher = _fixed_shot_log_probs(sel, params, q[b:b + 1], c[b:b + 1], mask[b:b + 1], seqs)
        order = np.argsort(-teacher, kind="stable")
        n = len(seqs)
        np.testing.assert_allclose(score[b, :n], teacher[order], rtol=1e-5, atol=1e-5)
        # the same sequences (ties aside: the log-probs of the beams are those of their own sequences)
        got = {tuple(p) for p in picks[b, :n]}
        assert got == {tuple(s) for s in seqs}
        beam_teacher = _fixed_shot_log_probs(sel, params, q[b:b + 1], c[b:b + 1], mask[b:b + 1], picks[b, :n])
        np.testing.assert_allclose(score[b, :n], beam_teacher, rtol=1e-5, atol=1e-5)
        assert np.all(picks[b, n:] == -1) and np.all(np.isneginf(score[b, n:]))


@pytest.mark.parametrize("preset", PRESETS)
def test_a_beam_of_one_is_the_greedy_decode(preset):
    sel, params, q, c, mask = _setup(preset)
    picks, _ = sampling.beam_search(sel, params, q, c, mask, S, 1)
    greedy = sel.greedy(params, q, c, mask, S, allow_stop=False)
    np.testing.assert_array_equal(np.asarray(picks)[:, 0], np.asarray(greedy))


def test_a_narrow_beam_keeps_the_best_of_its_own_expansions():
    """Width 3: every beam is a distinct valid sequence, sorted, and the first is at least the greedy one."""
    sel, params, q, c, mask = _setup("v4_3")
    picks, score = sampling.beam_search(sel, params, q, c, mask, S, 3)
    picks, score = np.asarray(picks), np.asarray(score)
    assert np.all(np.diff(score, axis=1) <= 1e-6)
    for b, valid in enumerate((K, 4)):
        assert len({tuple(p) for p in picks[b]}) == 3
        assert all(len(set(p)) == S and max(p) < valid for p in picks[b].tolist())
    greedy = sel.greedy(params, q, c, mask, S, allow_stop=False)
    for b in range(2):
        greedy_lp = _fixed_shot_log_probs(sel, params, q[b:b + 1], c[b:b + 1], mask[b:b + 1], np.asarray(greedy[b:b + 1]))
        assert score[b, 0] >= greedy_lp[0] - 1e-5


@pytest.mark.parametrize("preset, temperature", [("v4_1", 1.0), ("v4_3", 1.3), ("v4_10", 1.0)])
def test_sampling_frequencies_follow_the_policy(preset, temperature):
    """χ² of 20,000 draws of the ragged pool's sequences against the policy at τ (the teacher-forced
    log-probabilities of logits / τ, computed in float64 from the network's own step log-probabilities)."""
    sel, params, q, c, mask = _setup(preset, temperature=0.5)
    n = 20_000
    picks, logp = jax.jit(lambda p, k: sampling.sample(sel, p, q, c, mask, S, n, k, temperature=temperature))(
        params, jax.random.PRNGKey(3))
    picks, logp = np.asarray(picks[1]), np.asarray(logp[1])
    seqs = _all_sequences(4)
    teacher = _fixed_shot_log_probs(sel, params, q[1:], c[1:], mask[1:], seqs, temperature)
    expected = np.exp(teacher) * n
    index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
    observed = np.bincount([index[tuple(p)] for p in picks.tolist()], minlength=len(seqs))
    keep = expected >= 5
    chi2, pvalue = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
    assert pvalue > 1e-3, (chi2, pvalue)
    # each draw's log-probability is its sequence's (up to the model's exp(-100) on picked candidates)
    np.testing.assert_allclose(logp[:50], teacher[[index[tuple(p)] for p in picks[:50].tolist()]],
                               rtol=1e-4, atol=1e-4)


def test_sampled_log_probs_equal_the_teacher_forced_ones_at_temperature_one():
    sel, params, q, c, mask = _setup("v4_10")
    picks, logp = sampling.sample(sel, params, q, c, mask, S, 64, jax.random.PRNGKey(0), allow_stop=True)
    teacher = sel.log_probs(params, q, c, mask, picks)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(teacher), rtol=1e-4, atol=1e-4)
    # with STOP allowed a STOP selector stops in some draws, and after a STOP only STOP follows
    p = np.asarray(picks)
    stopped = p == K
    assert stopped.any()
    for row in p[stopped.any(-1)]:
        t = int(np.argmax(row == K))
        assert np.all(row[t:] == K)


def test_samples_never_repeat_a_candidate_nor_pick_padding():
    sel, params, q, c, mask = _setup("v4_1")
    picks, _ = sampling.sample(sel, params, q, c, mask, S, 500, jax.random.PRNGKey(1), temperature=5.0)
    p = np.asarray(picks)
    assert all(len(set(row)) == S for row in p.reshape(-1, S).tolist())
    assert p[1].max() < 4
