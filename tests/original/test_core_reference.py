"""leverjax (jitted, float32) against the NumPy float64 transcription of docs/reference.md in reference_numpy.py.

Every comparison runs on inputs drawn here from fixed seeds: ragged pools padded with garbage vectors,
padded trajectories (−1), a padded batch row, 1-2 layers, 1-2 heads, gated and static variants.
Parameters are the Flax init plus noise, so identity/zero initial values cannot hide a transposed
kernel or a missing bias.

Tolerance: rtol 1e-5 everywhere. An absolute term is needed only where a float32 value is a small
difference of large terms: a log-prob near 0 is ``logit − logsumexp`` with logits up to ±10 (cosine /
0.1), so float32 rounding (1.2e-7 relative) of O(10) numbers leaves an absolute error that does not
shrink with the result (seen: ≤ 6.3e-7 absolute for |log p| < 1, ≤ 5.4e-7 relative elsewhere).
``LOGP_ATOL`` = 5e-6 is eight times that and far below any real discrepancy (a wrong mask, scale, eps
or transposed kernel moves log-probs by > 1e-3).
"""
from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core import advantages as adv_mod
from leverjax.core import losses
from leverjax.core.model import Selector, SelectorConfig, init_params

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the helper next to this file
import original.reference_numpy as ref  # noqa: E402

RTOL = 1e-5
LOGP_ATOL = 5e-6  # see the module docstring
LOSS_ATOL = 1e-6  # GRPO/advantage inputs are float32 values of order 1

REWARD_LEVELS = np.array([0.0, 0.3, 0.6, 0.9, 1.0], np.float32)

CASES = {
    # name: (config, d, K, M, S, B, seed)
    "1layer-1head-gated": (SelectorConfig(hidden=16, num_layers=1, num_heads=1), 24, 8, 5, 2, 3, 0),
    "2layers-2heads-gated-d=H": (SelectorConfig(hidden=16, num_layers=2, num_heads=2), 16, 10, 6, 3, 3, 1),
    "2heads-static": (SelectorConfig(hidden=32, num_layers=1, num_heads=2, gated=False), 20, 12, 5, 3, 2, 2),
}


def _perturb(params, key, scale=0.1):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _init_perturbed(config, d, seed):
    """Flax init plus noise on every leaf, jitted (one compile instead of many eager ops)."""
    fn = jax.jit(lambda key: _perturb(init_params(config, key, d), jax.random.fold_in(key, 1)))
    return fn(jax.random.PRNGKey(seed))


def _draw_inputs(rng, d, K, M, S, B):
    """Queries, ragged pools (garbage in padded slots), trajectories with padding, rewards, masks."""
    q = rng.normal(size=(B, d)).astype(np.float32)
    C = rng.normal(size=(B, K, d)).astype(np.float32)
    cand_mask = np.zeros((B, K), bool)
    traj = np.full((B, M, S), -1, np.int32)
    traj_mask = np.zeros((B, M), bool)
    for b in range(B):
        # row 0 uses the whole pool; the last row only 3 slots, so 4 greedy steps run past its pool
        n_valid = K if b == 0 else 3 if b == B - 1 else int(rng.integers(S + 1, K))
        cand_mask[b, :n_valid] = True
        C[b, n_valid:] = 50.0 * rng.normal(size=(K - n_valid, d))  # garbage must not leak in
        n_traj = M if b == 0 else int(rng.integers(1, M))
        traj_mask[b, :n_traj] = True
        for m in range(n_traj):
            traj[b, m] = rng.choice(n_valid, size=S, replace=False)
    traj[0, M - 1, 1] = traj[0, M - 1, 0]  # one trajectory repeats a pick: its label has logit −100
    rewards = rng.choice(REWARD_LEVELS, size=(B, M)).astype(np.float32)
    return q, C, cand_mask, traj, traj_mask, rewards


@functools.lru_cache(maxsize=None)
def _jitted_forward(config):
    sel = Selector(config)

    @jax.jit
    def forward(params, q, C, cand_mask, traj, traj_mask, query_mask, rewards, rce_step, rce_total, label_smoothing):
        step = sel.step_log_probs(params, q, C, cand_mask, traj)
        tau = losses.rce_temperature(rce_step, rce_total)
        return dict(
            tau=tau,
            step=step,
            logp=sel.log_probs(params, q, C, cand_mask, traj),
            sft=losses.sft_loss(step[:, 0], traj[:, 0], cand_mask, query_mask, label_smoothing),
            rce=losses.rce_loss(step, traj, traj_mask, cand_mask, rewards, tau, query_mask, label_smoothing),
            # greedy decoding for 1..4 steps, in the same program (one compile per config)
            greedy={n: sel.greedy(params, q, C, cand_mask, n) for n in (1, 2, 3, 4)},
        )

    return forward


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request):
    config, d, K, M, S, B, seed = CASES[request.param]
    rng = np.random.default_rng(seed)
    params = _init_perturbed(config, d, seed)
    q, C, cand_mask, traj, traj_mask, rewards = _draw_inputs(rng, d, K, M, S, B)
    # An extra padded batch row (a copy of row 0 with query_mask False) must not change any loss.
    pad = lambda x: np.concatenate([x, x[:1]], 0)
    query_mask = np.array([True] * B + [False])
    label_smoothing = 0.1
    out = _jitted_forward(config)(params, pad(q), pad(C), pad(cand_mask), pad(traj), pad(traj_mask), query_mask,
                                  pad(rewards), 7, 20, label_smoothing)
    out = jax.tree_util.tree_map(lambda v: np.asarray(v)[:B] if np.ndim(v) else float(v), out)
    tau = out["tau"]  # the RCE temperature at step 7 of 20, from leverjax's schedule
    p64 = ref.to_float64(params)
    arch = dict(num_layers=config.num_layers, num_heads=config.num_heads, gated=config.gated)
    # The reference: every trajectory encodes its own copy of the pool (as the original does).
    ref_step = {}
    for b in range(B):
        for m in range(M):
            if traj_mask[b, m]:
                ref_step[b, m] = ref.step_log_probs(p64, q[b].astype(np.float64), C[b].astype(np.float64),
                                                    cand_mask[b], traj[b, m], **arch)
    return dict(config=config, params=params, p64=p64, arch=arch, q=q, C=C, cand_mask=cand_mask, traj=traj,
                traj_mask=traj_mask, rewards=rewards, tau=tau, ls=label_smoothing, out=out, ref_step=ref_step,
                B=B, M=M, S=S)


def test_per_step_log_probs(case):
    checked = 0
    for (b, m), expected in case["ref_step"].items():
        valid = case["cand_mask"][b]
        got = case["out"]["step"][b, m][:, valid]
        np.testing.assert_allclose(got, expected[:, valid], rtol=RTOL, atol=LOGP_ATOL, err_msg=f"query {b} traj {m}")
        checked += 1
    assert checked == int(case["traj_mask"].sum())


def test_trajectory_log_probs(case):
    got = case["out"]["logp"]
    for b in range(case["B"]):
        for m in range(case["M"]):
            if case["traj_mask"][b, m]:
                expected = ref.trajectory_log_prob(case["ref_step"][b, m], case["traj"][b, m])
                np.testing.assert_allclose(got[b, m], expected, rtol=RTOL, atol=LOGP_ATOL)
            else:
                assert got[b, m] == 0.0  # padded trajectories score 0
    # the repeated pick of trajectory (0, M−1) costs about 100 nats: the −100 logit is in place
    assert got[0, case["M"] - 1] < -90.0


def test_sft_cross_entropy_with_label_smoothing(case):
    B = case["B"]
    expected = ref.sft_loss([case["ref_step"][b, 0] for b in range(B)], [case["traj"][b, 0] for b in range(B)],
                            [case["cand_mask"][b] for b in range(B)], case["ls"])
    np.testing.assert_allclose(case["out"]["sft"], expected, rtol=RTOL, atol=LOGP_ATOL)


def test_rce_loss(case):
    np.testing.assert_allclose(case["tau"], ref.rce_temperature(7, 20), rtol=1e-7)
    per_query = []
    for b in range(case["B"]):
        ms = [m for m in range(case["M"]) if case["traj_mask"][b, m]]
        per_query.append(ref.rce_query_loss([case["ref_step"][b, m] for m in ms], [case["traj"][b, m] for m in ms],
                                            case["rewards"][b, ms], case["cand_mask"][b], case["tau"], case["ls"]))
    np.testing.assert_allclose(case["out"]["rce"], np.mean(per_query), rtol=RTOL, atol=LOGP_ATOL)


@pytest.mark.parametrize("num_steps", [1, 2, 3, 4])
def test_greedy_picks(case, num_steps):
    got = case["out"]["greedy"][num_steps]
    assert got.shape == (case["B"], num_steps)
    for b in range(case["B"]):
        picks, margin = ref.greedy(case["p64"], case["q"][b].astype(np.float64), case["C"][b].astype(np.float64),
                                   case["cand_mask"][b], num_steps, **case["arch"])
        assert margin > 1e-3, "test data has a near tie; pick another seed"
        assert list(got[b]) == picks, f"query {b}"
    if num_steps == 4:
        # more steps than the last row's 3-slot pool: each valid slot once, then the first valid slot again
        last = got[case["B"] - 1]
        assert sorted(last[:3]) == [0, 1, 2] and last[3] == 0


def test_rce_temperature_schedule():
    fn = jax.jit(losses.rce_temperature)
    for step, total in [(0, 10), (1, 10), (5, 10), (9, 10), (12, 10), (0, 1), (3, 1), (50, 200)]:
        np.testing.assert_allclose(fn(step, total), ref.rce_temperature(step, total), rtol=1e-6)


# -- GRPO, advantages, top-k, adaptive β on random arrays --------------------------------------------

def _grpo_inputs(seed, B=4, M=6):
    rng = np.random.default_rng(seed)
    traj_mask = np.ones((B, M), bool)
    traj_mask[1, 4:] = False
    traj_mask[2, 1:] = False  # a one-trajectory group
    logp_ref = rng.uniform(-8, -1, size=(B, M)).astype(np.float32)
    logp_new = (logp_ref + rng.normal(scale=0.3, size=(B, M))).astype(np.float32)  # many ratios clip
    rewards = rng.choice(REWARD_LEVELS, size=(B, M)).astype(np.float32)
    return logp_new, logp_ref, rewards, traj_mask


_grpo_jit = jax.jit(losses.grpo_loss, static_argnames="kl_estimator")


@pytest.mark.parametrize("estimator", ["reference", "k3", "none"])
@pytest.mark.parametrize("eps,eps_high,beta", [(0.2, None, 0.1), (0.2, 0.28, 0.5), (0.1, 0.3, 0.0)],
                         ids=["symmetric", "asymmetric", "clip-only"])
def test_grpo_loss_and_parts(estimator, eps, eps_high, beta):
    for seed in (0, 1):
        logp_new, logp_ref, rewards, traj_mask = _grpo_inputs(seed)
        adv = np.asarray(adv_mod.group_advantages(rewards, traj_mask, method="zscore"))
        terms = _grpo_jit(logp_new, logp_ref, adv, traj_mask, clip_eps=eps, clip_eps_high=eps_high, kl_coef=beta,
                          kl_estimator=estimator)
        groups = [(logp_new[b, traj_mask[b]].astype(np.float64), logp_ref[b, traj_mask[b]].astype(np.float64),
                   adv[b, traj_mask[b]].astype(np.float64)) for b in range(len(traj_mask))]
        expected = ref.grpo_loss(groups, eps=eps, eps_high=eps_high, beta=beta, estimator=estimator)
        for name, got, want in zip(terms._fields, terms, expected):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=LOSS_ATOL, err_msg=f"{name} seed {seed}")
        assert 0.0 < float(terms.clip_fraction) < 1.0  # the clipping branch is exercised
        if beta == 0.0:
            assert float(terms.loss) == float(terms.ppo)  # clip-only: the KL has no effect


def test_grpo_query_mask_drops_rows():
    logp_new, logp_ref, rewards, traj_mask = _grpo_inputs(3)
    adv = np.asarray(adv_mod.group_advantages(rewards, traj_mask))
    query_mask = np.array([True, False, True, True])
    terms = _grpo_jit(logp_new, logp_ref, adv, traj_mask, kl_coef=0.1, query_mask=query_mask)
    groups = [(logp_new[b, traj_mask[b]].astype(np.float64), logp_ref[b, traj_mask[b]].astype(np.float64),
               adv[b, traj_mask[b]].astype(np.float64)) for b in (0, 2, 3)]
    expected = ref.grpo_loss(groups, beta=0.1)
    np.testing.assert_allclose(np.array(terms), expected, rtol=RTOL, atol=LOSS_ATOL)


@pytest.mark.parametrize("method", adv_mod.ADVANTAGE_METHODS)
@pytest.mark.parametrize("min_std,clip", [(0.1, 5.0), (0.5, 1.0), (0.0, 5.0)])
def test_every_advantage_method(method, min_std, clip):
    rng = np.random.default_rng(7)
    B, M = 12, 6
    rewards = rng.choice(REWARD_LEVELS, size=(B, M)).astype(np.float32) * rng.choice([1.0, 3.0], size=(B, 1))
    rewards = rewards.astype(np.float32)
    mask = rng.random((B, M)) < 0.8
    mask[0] = False  # all masked
    mask[1] = [True] + [False] * (M - 1)  # one trajectory
    rewards[2] = 0.6  # zero variance
    got = np.asarray(adv_mod.group_advantages(rewards, mask, method=method, min_std=min_std, clip=clip))
    for b in range(B):
        want = np.zeros(M)
        want[mask[b]] = ref.advantages(rewards[b, mask[b]].astype(np.float64), method, min_std=min_std, clip=clip)
        np.testing.assert_allclose(got[b], want, rtol=RTOL, atol=LOSS_ATOL, err_msg=f"group {b}")


def test_top_k_mask():
    rng = np.random.default_rng(8)
    rewards = rng.choice(REWARD_LEVELS, size=(20, 7)).astype(np.float32)  # many ties
    mask = rng.random((20, 7)) < 0.8
    topk = jax.jit(lambda r, m, k: adv_mod.top_k_mask(r, m, k, ties="lowest_index"))
    for k in (1, 3, 5, 7):
        got = np.asarray(topk(rewards, mask, k))
        for b in range(20):
            idx = np.flatnonzero(mask[b])
            kept = [idx[i] for i in ref.top_k(list(rewards[b, idx]), k)]
            assert list(np.flatnonzero(got[b])) == kept


def test_adaptive_beta():
    rng = np.random.default_rng(9)
    kls = 10.0 ** rng.uniform(-4, 0.5, size=300)
    kls = kls[(np.abs(kls - 0.1) > 1e-3) & (np.abs(kls - 0.01) > 1e-4)]  # stay off the thresholds
    step = jax.jit(losses.adapt_beta)
    beta_jax, beta_ref = jnp.float32(0.1), 0.1
    hit_min = hit_max = False
    for kl in kls:
        beta_jax, beta_ref = step(beta_jax, jnp.float32(kl)), ref.adapt_beta(beta_ref, float(np.float32(kl)))
        np.testing.assert_allclose(float(beta_jax), beta_ref, rtol=RTOL)
        hit_min |= beta_ref == 1e-3
        hit_max |= beta_ref == 10.0
    # the sequence is long enough to reach a bound (defect 7): the clamp is compared too
    assert hit_min or hit_max
    # thresholds are strict: kl exactly at either bound leaves β unchanged
    np.testing.assert_allclose(float(step(0.2, 0.1)), 0.2, rtol=1e-7)
    np.testing.assert_allclose(float(step(0.2, 0.01)), 0.2, rtol=1e-7)
