"""Reward modes and per-query normalisations against a plain numpy transcription of the reference."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core.rewards import NORMALIZATIONS, REWARD_MODES, compute_rewards, normalize_rewards, raw_rewards
from leverjax.errors import ConfigError

H = np.array([1.0, 0.0, 1.0, 0.0, 1.0], np.float32)
S = np.array([1.0, 0.0, 0.3, 0.6, 0.9], np.float32)
G = np.array([0.8, np.nan, 1.2, 0.1, 0.5], np.float32)
R = np.array([1.0, 0.4, np.nan, 0.7, 0.2], np.float32)


def reference(mode, h, s, g, r, wh=1.0, ws=1.0, wr=0.1):
    g, r = np.nan_to_num(g), np.nan_to_num(r)
    out = {
        "hard_plus_soft": wh * h + ws * s,
        "hard_plus_soft_v2": ws * s + 2 * wh * h,
        "separated": np.where(h == 1, 2 * wh + ws * s, ws * s),
        "hard_only": wh * h,
        "soft_only": ws * s,
        "hard01_plus_gtprob": wh * h + ws * g,
        "hard01_plus_gtprob_separated": np.where(h == 1, 2 * wh + ws * g, ws * g),
        "hard_plus_gtprob_plus_rel": wh * h + ws * g + wr * (1 - h) * r,
    }[mode]
    return np.clip(out, -5, 5)


@pytest.mark.parametrize("mode", REWARD_MODES)
def test_every_mode_matches_the_reference(mode):
    got = raw_rewards(H, S, G, R, mode=mode)
    np.testing.assert_allclose(got, reference(mode, H, S, G, R), rtol=1e-6)
    got = raw_rewards(H, S, G, R, mode=mode, w_hard=0.7, w_soft=0.5, w_rel=0.3)
    np.testing.assert_allclose(got, reference(mode, H, S, G, R, 0.7, 0.5, 0.3), rtol=1e-6)
    assert not np.isnan(np.asarray(got)).any()


def test_rewards_are_clipped_and_weights_can_be_traced():
    assert float(raw_rewards(1.0, 1.0, 0.0, 0.0, w_hard=10.0).max()) == 5.0
    assert float(raw_rewards(1.0, 0.0, 0.0, 0.0, w_hard=-9.0).min()) == -5.0
    sweep = jax.jit(jax.vmap(lambda w: raw_rewards(H, S, G, R, mode="separated", w_hard=w, w_soft=0.5)))
    got = sweep(jnp.array([0.5, 1.0, 3.0]))
    for i, w in enumerate([0.5, 1.0, 3.0]):
        np.testing.assert_allclose(got[i], reference("separated", H, S, G, R, w, 0.5), rtol=1e-6)


def test_unknown_mode_and_method_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown reward mode 'hard'; valid modes are hard_plus_soft,"):
        raw_rewards(H, S, G, R, mode="hard")
    with pytest.raises(ConfigError, match="valid ones are z_score_clamp, z_score, rank_normalize, none"):
        normalize_rewards(H, H > -1, method="zscore")


def np_zscore(x, clamp):
    std = x.std(ddof=1) if len(x) > 1 else np.nan
    if not std > 1e-12:
        return x
    z = (x - x.mean()) / std
    return np.clip(z, -3, 3) if clamp else z


@pytest.mark.parametrize("method", ["z_score_clamp", "z_score"])
def test_z_score_per_query_with_masks(method):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 12)).astype(np.float32) * 2
    x[0, :] = [0.0] * 11 + [20.0]                     # an outlier beyond 3 std (needs n >= 11)
    mask = rng.random((6, 12)) < 0.8
    mask[0] = True
    mask[1] = [True] + [False] * 11                     # a group of one keeps its raw value
    mask[2] = False                                     # an empty group
    x[3] = 1.3                                          # a flat group keeps its raw values
    got = np.asarray(normalize_rewards(x, mask, method=method))
    for q in range(6):
        want = np.zeros(12, np.float32)
        want[mask[q]] = np_zscore(x[q][mask[q]].astype(np.float64), method == "z_score_clamp")
        np.testing.assert_allclose(got[q], want, rtol=1e-5, atol=1e-5)
    assert (got[3][mask[3]] == np.float32(1.3)).all()
    assert got[1, 0] == x[1, 0] and (got[2] == 0).all()
    if method == "z_score_clamp":
        assert got[0].max() == 3.0
    else:
        assert got[0].max() > 3.0
    assert np.isfinite(got).all()


def test_rank_normalize_ties_by_position_and_masking():
    x = jnp.array([[0.5, 2.0, 1.0, 2.0, 9.0], [3.0, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    got = np.asarray(normalize_rewards(x, mask, method="rank_normalize"))
    np.testing.assert_allclose(got[0], [-1.0, 1.0, -1 / 3, 1 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(got[1], [0, 0, 0, 0, 0])     # n = 1 gives 0
    np.testing.assert_allclose(got[2], [1.0, 0.0, -1.0, 0, 0], atol=1e-7)  # ties: earlier ranks first


def test_none_and_degenerate_inputs_never_give_nan():
    x = jnp.array([[np.inf, 1.0], [np.nan, 2.0]])
    raw = raw_rewards(x, x, x, x)
    assert np.isfinite(np.asarray(raw)).all()
    for method in NORMALIZATIONS:
        for mask in (jnp.zeros((2, 2), bool), jnp.ones((2, 2), bool), jnp.array([[1, 0], [0, 1]], bool)):
            out = np.asarray(normalize_rewards(raw, mask, method=method))
            assert np.isfinite(out).all() and (out[~np.asarray(mask)] == 0).all()
    np.testing.assert_array_equal(normalize_rewards(jnp.array([1.0, 2.0]), jnp.array([True, False]), method="none"), [1.0, 0.0])


def test_compute_rewards_is_jittable_with_static_strings():
    mask = np.array([[1, 1, 1, 1, 0]], bool)
    fn = jax.jit(functools.partial(compute_rewards, mode="hard_plus_gtprob_plus_rel", normalize="z_score_clamp"))
    got = fn(H[None], S[None], G[None], R[None], mask, w_rel=jnp.float32(0.2))
    want = np.zeros(5, np.float32)
    want[:4] = np_zscore(reference("hard_plus_gtprob_plus_rel", H, S, G, R, wr=0.2)[:4].astype(np.float64), True)
    np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)
