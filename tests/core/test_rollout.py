"""On-policy GRPO (leverjax/core/rollout.py, Pipeline.on_policy_step): the ratio at μ = 1, flat groups, dynamic
sampling, the scorer-call count, the estimators against NumPy transcriptions, the reward model, and a resumed run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core import config as config_lib
from leverjax.core import losses, reward_model, rollout
from leverjax.core.program import make_train
from leverjax.core.train import Pipeline
from leverjax.data import synth
from leverjax.data.device import DeviceData, gather, padded_batches
from leverjax.errors import ConfigError, DataError
from leverjax.run.engine import Runner, expand_runs

TINY = dict(hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=2, sft_batch_size=16, rce_batch_size=8,
            grpo_batch_size=8, eval_chunk=64, eval_shots=2, grpo_mode="on_policy", rollouts=4)


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


def on_policy_config(**overrides):
    return config_lib.replace(config_lib.Config(), {**TINY, **overrides})


def first_batch(pipe, data):
    index = padded_batches(jnp.asarray(pipe.split_index["train"]), pipe.cfg.grpo_batch_size)[0]
    return index, gather(data, index)


def one_step(tiny, **overrides):
    """The state before and after one on-policy step of the GRPO phase, and its metrics."""
    cfg = on_policy_config(**overrides)
    pipe = Pipeline(cfg, tiny)
    data = DeviceData.from_dataset(tiny)
    hp = pipe.hyperparameters()
    g = [i for i, p in enumerate(pipe.phases) if p.kind == "grpo"][0]
    state = pipe.begin_phase(g, pipe.init_state(data, hp, jax.random.PRNGKey(0)), data, hp)
    index, _ = first_batch(pipe, data)
    new, metrics = jax.jit(lambda s: pipe.on_policy_step(g, hp, data, {}, 0, s, index))(state)
    return pipe, state, new, metrics


# -- the ratio, the count, the metrics --------------------------------------------------------------------------


def test_with_mu_1_the_ratio_is_exactly_1_and_nothing_is_clipped(tiny):
    _, _, _, m = one_step(tiny, grpo_lr=1e-2, inner_epochs=1)
    assert float(m["mean_ratio"]) == 1.0 and float(m["clip_ratio"]) == 0.0


def test_with_mu_2_the_second_update_moves_the_ratio_away_from_1(tiny):
    # The step's mean ratio averages the two updates: the first's is 1, the second's is not.
    _, _, _, m = one_step(tiny, grpo_lr=1e-1, inner_epochs=2, freeze_backbone=False)
    assert float(m["mean_ratio"]) != 1.0


def test_every_sampled_selection_is_one_scorer_call(tiny):
    pipe, before, after, m = one_step(tiny)
    valid = int(np.sum(np.asarray(first_batch(pipe, DeviceData.from_dataset(tiny))[0]) >= 0))
    assert int(after["scorer_calls"]) - int(before["scorer_calls"]) == valid * 4
    _, before, after, _ = one_step(tiny, advantage="remax")  # plus the greedy selection of each query
    assert int(after["scorer_calls"]) - int(before["scorer_calls"]) == valid * 5


def test_trl_metric_names_are_logged_per_epoch(tiny):
    cfg = on_policy_config()
    train, pipe, _ = make_train(cfg, tiny)
    _, history, _ = jax.jit(train)(pipe.hyperparameters(), jax.random.PRNGKey(0))
    grpo = {k: np.asarray(v) for k, v in history["grpo"].items()}
    for name in ("reward", "reward_std", "frac_reward_zero_std", "clip_ratio", "entropy", "scorer_calls"):
        assert np.isfinite(grpo[f"train_{name}"]).all(), name
    per_epoch = len(pipe.split_index["train"]) * 4
    np.testing.assert_array_equal(grpo["train_scorer_calls"], [per_epoch, 2 * per_epoch])
    assert 0.0 < grpo["train_reward"].min() and grpo["train_reward"].max() < 1.0


def test_the_rollout_scores_are_the_oracle_of_the_sampled_selections(tiny):
    pipe = Pipeline(on_policy_config(), tiny)
    data = DeviceData.from_dataset(tiny)
    hp = pipe.hyperparameters()
    params = pipe.init_state(data, hp, jax.random.PRNGKey(0))["params"]
    index, batch = first_batch(pipe, data)
    roll = pipe.rollout(params, batch, data, hp, jax.random.PRNGKey(3))
    picks = np.asarray(roll["picks"])
    pools = np.asarray(tiny.pool_ids)[np.asarray(index)]
    qrows = np.asarray(tiny.query_ids)[np.asarray(index)]
    for b in range(picks.shape[0]):
        rows = pools[b][picks[b]]
        assert all(len(set(r)) == len(r) for r in rows)  # no demonstration twice in one selection
        expected = synth.oracle_accuracy_np(tiny.oracle, np.full(len(rows), qrows[b]), rows)
        np.testing.assert_allclose(np.asarray(roll["scores"])[b], expected, rtol=1e-5)


# -- flat groups and dynamic sampling ---------------------------------------------------------------------------


class _ParityScorer(Pipeline):
    """A scorer under the test's control: 0.5 for every selection of an even query row (always flat groups),
    for an odd one whether its first demonstration's row is even (flat only when every sample agrees)."""

    def _score(self, data, query_rows, rows, counts, scorer=None):
        parity = (rows[..., 0] % 2 == 0).astype(jnp.float32)
        return jnp.where(query_rows[:, None] % 2 == 0, 0.5, parity)


def _rollout(tiny, **overrides):
    cfg = {"rollouts": 2, "grpo_batch_size": 32, "rollout_temperature": 3.0, **overrides}
    pipe = _ParityScorer(on_policy_config(**cfg), tiny)
    data = DeviceData.from_dataset(tiny)
    hp = pipe.hyperparameters()
    params = pipe.init_state(data, hp, jax.random.PRNGKey(0))["params"]
    index, batch = first_batch(pipe, data)
    roll = jax.jit(lambda k: pipe.rollout(params, batch, data, hp, k))(jax.random.PRNGKey(5))
    even = np.asarray(tiny.query_ids)[np.asarray(index)] % 2 == 0
    return roll, np.asarray(batch.query_mask), even


def test_flat_groups_get_zero_advantage_and_zero_gradient(tiny):
    roll, valid, _ = _rollout(tiny, advantage="zscore")
    flat = np.asarray(rollout.flat_groups(roll["scores"])) & valid
    assert flat.any() and (~flat & valid).any()
    assert np.all(np.asarray(roll["advantages"])[flat] == 0.0)
    # The PPO term's gradient with respect to the log-probs of a flat group is exactly zero.
    logp = jnp.zeros(roll["scores"].shape)
    grad = jax.grad(lambda lp: losses.grpo_loss(lp, lp * 0, roll["advantages"], roll["mask"], kl_coef=0.0,
                                                logp_old=jax.lax.stop_gradient(lp)).loss)(logp)
    assert np.all(np.asarray(grad)[flat] == 0.0) and np.any(np.asarray(grad)[~flat & valid] != 0.0)


def test_dynamic_sampling_resamples_flat_groups_drops_what_stays_flat_and_counts_every_call(tiny):
    plain, valid, even = _rollout(tiny)
    dyn, _, _ = _rollout(tiny, dynamic_sampling=3)
    flat_before = np.asarray(rollout.flat_groups(plain["scores"])) & valid
    flat_after = np.asarray(rollout.flat_groups(dyn["scores"])) & valid
    assert np.all(flat_after[even & valid])  # never any signal: still flat after the budget
    assert flat_after.sum() < flat_before.sum()  # resampling found signal for some odd queries
    np.testing.assert_array_equal(np.asarray(dyn["mask"]).any(-1), valid & ~flat_after)  # still flat: dropped
    assert np.all(np.asarray(dyn["advantages"])[flat_after] == 0.0)
    n = int(valid.sum())
    assert int(plain["calls"]) == 2 * n
    # every resampled group costs 2 more calls; the even ones are resampled all 3 times
    extra = int(dyn["calls"]) - 2 * n
    assert extra % 2 == 0 and 3 * 2 * int((even & valid).sum()) <= extra <= 3 * 2 * int(flat_before.sum())


def test_dynamic_sampling_judges_the_raw_score():
    scores = jnp.array([[0.5, 0.5, 0.5], [0.0, 1.0, 0.0], [0.2, 0.2, 0.3]])
    np.testing.assert_array_equal(np.asarray(rollout.flat_groups(scores)), [True, False, False])


def test_reward_statistics_are_trl_s():
    scores = np.array([[0.6] * 8, [0.0, 1.0] * 4, [1 / 3] * 8], np.float32)
    out = rollout.group_stats(jnp.asarray(scores), jnp.ones(scores.shape, bool))
    np.testing.assert_allclose(float(out["reward"]), scores.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(out["reward_std"]), scores.std(-1).mean(), atol=1e-6)
    assert float(out["frac_reward_zero_std"]) == pytest.approx(2 / 3)  # flat however the mean rounds


# -- the estimators against NumPy -------------------------------------------------------------------------------


def test_remax_is_the_score_minus_the_greedy_score():
    rng = np.random.default_rng(0)
    scores, greedy = rng.uniform(size=(5, 4)), rng.uniform(size=5)
    mask = rng.uniform(size=(5, 4)) > 0.2
    out = rollout.remax_advantages(jnp.asarray(scores, jnp.float32), jnp.asarray(greedy, jnp.float32),
                                   jnp.asarray(mask), 0.4)
    np.testing.assert_allclose(np.asarray(out), np.where(mask, np.clip(scores - greedy[:, None], -0.4, 0.4), 0.0),
                               atol=1e-6)


def test_dr_grpo_advantages_are_centred_without_std_scaling():
    from leverjax.core.advantages import group_advantages

    rng = np.random.default_rng(1)
    r = rng.uniform(size=(6, 5))
    mask = np.ones_like(r, bool)
    mask[2, 3:] = False
    out = np.asarray(group_advantages(jnp.asarray(r, jnp.float32), jnp.asarray(mask), method="mean", clip=5.0))
    expected = np.stack([np.where(m, x - x[m].mean(), 0.0) for x, m in zip(r, mask)])
    np.testing.assert_allclose(out, expected, atol=1e-6)


def _dual_clip_numpy(logp, old, adv, eps, c):
    """The PPO surrogate with dual clip as the field's GRPO trainers write it (verl's compute_policy_loss)."""
    ratio = np.exp(logp - old)
    pg1, pg2 = -adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps)
    clipped = np.maximum(pg1, pg2)
    dual = np.minimum(-adv * c, clipped)
    return np.where(adv < 0, dual, clipped)


def test_dual_clip_bounds_the_loss_of_negative_advantages_like_the_numpy_formula():
    rng = np.random.default_rng(2)
    logp, old = rng.normal(scale=1.5, size=(4, 6)), rng.normal(scale=1.5, size=(4, 6))
    adv = rng.normal(size=(4, 6))
    mask = np.ones((4, 6), bool)
    for c in (0.0, 3.0):
        terms = losses.grpo_loss(jnp.asarray(logp, jnp.float32), jnp.zeros((4, 6)), jnp.asarray(adv, jnp.float32),
                                 jnp.asarray(mask), clip_eps=0.2, kl_coef=0.0, logp_old=jnp.asarray(old, jnp.float32),
                                 dual_clip=c)
        per = _dual_clip_numpy(logp, old, adv, 0.2, c) if c else np.maximum(
            -adv * np.exp(logp - old), -adv * np.clip(np.exp(logp - old), 0.8, 1.2))
        np.testing.assert_allclose(float(terms.ppo), per.mean(-1).mean(), rtol=1e-5)
    bounded = _dual_clip_numpy(logp, old, adv, 0.2, 3.0)
    assert np.all(bounded[adv < 0] <= -3.0 * adv[adv < 0] + 1e-9)


def test_the_entropy_is_the_numpy_entropy_of_each_step():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 7))
    logits[:, 5:] = -np.inf  # what cannot be picked
    logp = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
    p = np.exp(logp)
    expected = -np.sum(np.where(p > 0, p * np.where(p > 0, logp, 0.0), 0.0), -1)
    np.testing.assert_allclose(np.asarray(losses.step_entropy(jnp.asarray(logp, jnp.float32))), expected, rtol=1e-5)
    g = jax.grad(lambda x: losses.step_entropy(jax.nn.log_softmax(x)).sum())(jnp.asarray(logits, jnp.float32))
    assert np.isfinite(np.asarray(g)).all()


def test_the_entropy_bonus_lowers_the_loss_by_its_coefficient_times_the_entropy(tiny):
    _, _, _, plain = one_step(tiny, grpo_lr=0.0)
    _, _, _, bonus = one_step(tiny, grpo_lr=0.0, entropy_coef=0.5)
    np.testing.assert_allclose(float(bonus["loss"]), float(plain["loss"]) - 0.5 * float(plain["entropy"]), rtol=1e-5)


# -- the reward model -------------------------------------------------------------------------------------------


def test_the_reward_model_learns_a_planted_function():
    rng = np.random.default_rng(0)
    n, s, d = 3000, 2, 16
    q = rng.normal(size=(n, d)).astype(np.float32)
    demos = rng.normal(size=(n, s, d)).astype(np.float32)
    w = np.array([1.0, 0.5])
    target = 1.0 / (1.0 + np.exp(-(np.einsum("nd,nsd->ns", q, demos) / 2.0) @ w))  # first demo counts more
    fit = reward_model.fit(q[:2500], demos[:2500], target[:2500], steps=1500)
    cal = reward_model.calibration(fit, q[2500:], demos[2500:], target[2500:])
    assert cal["pearson_r"] > 0.9 and cal["mse"] < 0.25 * cal["mse_of_the_mean"], cal
    shuffled = reward_model.calibration(fit, q[2500:], demos[2500:], rng.permutation(target[2500:]))
    assert shuffled["pearson_r"] < 0.2  # it predicts the planted labels, not any labels


def test_reward_model_scorer_reports_its_calibration_and_the_oracle_drift(tiny):
    cfg = on_policy_config(rollout_scorer="reward_model", grpo_epochs=1)
    train, pipe, _ = make_train(cfg, tiny)
    cal = pipe.reward_model_calibration()
    assert cal["examples"] > 0 and len(cal["reliability"]) == 10
    _, history, _ = jax.jit(train)(pipe.hyperparameters(), jax.random.PRNGKey(0))
    grpo = history["grpo"]
    assert np.isfinite(np.asarray(grpo["train_oracle_reward"])).all()
    assert not np.allclose(np.asarray(grpo["train_oracle_reward"]), np.asarray(grpo["train_reward"]))
    assert np.all(np.asarray(grpo["train_scorer_calls"]) == 0)  # the reward model costs no VLM generation


# -- config and data errors -------------------------------------------------------------------------------------


def test_remax_needs_on_policy_and_dual_clip_must_exceed_1():
    with pytest.raises(ConfigError, match="remax needs grpo_mode=on_policy"):
        config_lib.replace(config_lib.Config(), {"advantage": "remax"})
    with pytest.raises(ConfigError, match="dual_clip"):
        config_lib.replace(config_lib.Config(), {"dual_clip": 0.5})


def test_an_oracle_scorer_on_data_without_an_oracle_is_one_clear_error(tiny):
    import dataclasses

    real = dataclasses.replace(tiny, oracle={})
    with pytest.raises(DataError, match="rollout_scorer=oracle needs the simulator's ground truth"):
        Pipeline(on_policy_config(), real)
    Pipeline(on_policy_config(rollout_scorer="reward_model"), real)  # the reward model needs only labels


# -- a killed run resumes with the same numbers -----------------------------------------------------------------


def test_an_on_policy_run_resumes_after_a_kill_with_the_same_numbers(tiny, tmp_path, monkeypatch):
    cfg = on_policy_config(grpo_epochs=3, checkpoint_every=1, checkpoint_seconds=0.0)
    runs = expand_runs({}, 0, 2)
    full = Runner(cfg, tiny, runs, name="full", workdir=str(tmp_path)).run()

    calls = {"n": 0}
    original = Runner._save

    def killed(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # after the first GRPO epoch (SFT 1, RCE 1, GRPO 1 ... saved)
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Runner, "_save", killed)
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, tiny, runs, name="resumed", workdir=str(tmp_path)).run()
    monkeypatch.setattr(Runner, "_save", original)
    lines = []
    resumed = Runner(cfg, tiny, runs, name="resumed", workdir=str(tmp_path), out=lines.append).run()
    assert any("resuming" in line for line in lines)
    for a, b in zip(full.final, resumed.final):
        for k in a:
            if k.startswith("test_"):
                np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
    hist = [h for h in resumed.history if h.get("phase") == "grpo"]
    ref = [h for h in full.history if h.get("phase") == "grpo"]
    assert [h["train_scorer_calls"] for h in hist] == [h["train_scorer_calls"] for h in ref]
