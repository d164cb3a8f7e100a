"""The offline evaluation against a plain float64 transcription of its definitions (leverjax.core.evaluate's
table), computed query by query from the selector's own primitives, and the reference policy's
validation picks that the state keeps instead of recomputing them at every epoch."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core import config as config_lib
from leverjax.core.evaluate import Evaluator
from leverjax.core.model import init_params
from leverjax.core.train import Pipeline
from leverjax.data import synth
from leverjax.data.device import DeviceData

SHOTS = 3


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(seed=1, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


def _pipeline(tiny, selector, **over):
    values = dict(selector=selector, hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=1, sft_batch_size=16,
                  rce_batch_size=8, grpo_batch_size=8, eval_chunk=5, eval_shots=SHOTS, label_smoothing=0.1)
    return Pipeline(config_lib.replace(config_lib.Config(), {**values, **over}), tiny)


def _plain_metrics(pipe, data, params, ref_params, raw, split):
    """Every metric of leverjax.core.evaluate's table, one query at a time in float64, from the selector's
    primitives called on the whole split at once (no chunks, no shared encoding)."""
    sel, s = pipe.selector, pipe.num_steps
    idx = pipe.split_index[split]
    q, c, pm = data.emb[data.query_ids[idx]], data.emb[data.pool_ids[idx]], data.pool_mask[idx]
    traj, tm = np.asarray(data.traj[idx]), np.asarray(data.traj_mask[idx])
    step_logp = np.asarray(jax.jit(sel.step_log_probs)(params, q, c, pm, data.traj[idx]), np.float64)
    greedy = jax.jit(sel.greedy, static_argnums=(4, 5))
    slots = not sel.config.prefix_consistent
    picks = {n: np.asarray(greedy(params, q, c, pm, n, False)) for n in range(1, max(SHOTS, s) + 1)}
    ref = np.asarray(greedy(ref_params, q, c, pm, s, False))
    adaptive = np.asarray(greedy(params, q, c, pm, SHOTS, True)) if sel.config.stop else None
    longest = picks[max(SHOTS, s)]
    pool_ids, emb = np.asarray(data.pool_ids[idx]), np.asarray(data.emb, np.float64)
    r = np.asarray(raw[idx], np.float64)
    k = step_logp.shape[-1]
    valid_k = np.concatenate([np.asarray(pm), np.ones((len(idx), k - pm.shape[1]), bool)], 1)
    acc = jax.jit(functools.partial(synth.oracle_accuracy, data.oracle))
    out = {n: [] for n in ("loss", "expected_reward", "top1_reward", "greedy_labelled", "changed_vs_ref",
                           "redundancy", *[f"oracle_acc_{n}" for n in range(1, SHOTS + 1)],
                           *[f"realised_acc_{n}" for n in range(1, SHOTS + 1)])}
    labelled_rewards = []
    for b in range(len(idx)):
        m = np.flatnonzero(tm[b])
        lp = step_logp[b, m]  # [m, S, K]
        nll = -np.take_along_axis(lp, traj[b, m][..., None], -1)[..., 0]
        smooth = -np.where(valid_k[b], lp, 0.0).sum(-1) / valid_k[b].sum()
        ce = (0.9 * nll + 0.1 * smooth).sum(-1)
        w = np.exp(r[b, m] - r[b, m].max())
        out["loss"].append(np.sum(w / w.sum() * ce))
        seq = np.take_along_axis(lp, traj[b, m][..., None], -1)[..., 0].sum(-1)
        pi = np.exp(seq - seq.max())
        out["expected_reward"].append(np.sum(pi / pi.sum() * r[b, m]))
        out["top1_reward"].append(r[b, m][np.argmax(seq)])
        first = (picks[s] if slots else longest[:, :s])[b]
        hits = [j for j in m if list(traj[b, j]) == list(first)]
        out["greedy_labelled"].append(float(bool(hits)))
        if hits:
            labelled_rewards.append(np.mean(r[b, hits]))
        out["changed_vs_ref"].append(float(list(first) != list(ref[b])))
        e = emb[pool_ids[b, longest[b, :SHOTS]]]
        e = e / np.linalg.norm(e, axis=-1, keepdims=True)
        cos = e @ e.T
        out["redundancy"].append((cos.sum() - np.trace(cos)) / (SHOTS * (SHOTS - 1)))
        for n in range(1, SHOTS + 1):
            rows = pool_ids[b, (picks[n] if slots else longest[:, :n])[b]]
            out[f"oracle_acc_{n}"].append(float(acc(data.query_ids[idx[b:b + 1]], jnp.asarray(rows)[None])[0]))
            # the VLM's one answer to that prompt, drawn on the host (numpy) from the same hash
            out[f"realised_acc_{n}"].append(float(synth.realised_accuracy_np(
                {k: np.asarray(v) for k, v in data.oracle.items()}, data.query_ids[idx[b:b + 1]], rows[None])[0]))
    metrics = {name: np.mean(v) for name, v in out.items()}
    metrics["greedy_labelled_reward"] = np.mean(labelled_rewards) if labelled_rewards else np.nan
    if adaptive is not None:
        stop = adaptive == pm.shape[1]
        count = np.where(stop.any(-1), np.argmax(stop, -1), SHOTS)
        metrics["stop_shots_mean"] = count.mean()
        for n in range(SHOTS + 1):
            metrics[f"stop_shot_frac_{n}"] = np.mean(count == n)
    return metrics


@pytest.mark.parametrize("selector", ["v4_1", "v4_8", "v4_10"])  # pointer; slots (not prefix-consistent); STOP
def test_every_metric_equals_a_plain_transcription(tiny, selector):
    pipe = _pipeline(tiny, selector)
    data = DeviceData.from_dataset(tiny)
    hp = pipe.hyperparameters()
    dim = data.emb.shape[-1]
    params = init_params(pipe.selector.config, jax.random.PRNGKey(1), dim, num_steps=pipe.num_steps)
    ref_params = init_params(pipe.selector.config, jax.random.PRNGKey(2), dim, num_steps=pipe.num_steps)
    raw, _ = pipe.rewards(data, hp)
    evaluator = Evaluator(pipe)
    expected = _plain_metrics(pipe, data, params, ref_params, raw, "val")
    assert 0 < expected["changed_vs_ref"] < 1 or selector == "v4_8"  # the comparison can go either way
    by_params = jax.jit(lambda p, r: evaluator.evaluate(p, r, data, hp, "val"))(params, ref_params)
    by_picks = jax.jit(lambda p, r: evaluator.evaluate(p, r, data, hp, "val"))(
        params, pipe.greedy_picks(ref_params, data, "val"))
    for got in (by_params, by_picks):
        for name, value in expected.items():
            assert np.isclose(float(got[name]), value, rtol=1e-5, atol=1e-5, equal_nan=True), (selector, name)
    assert set(by_params) - set(expected) <= {"oracle_acc_adaptive"}


def test_the_state_keeps_the_current_references_validation_picks(tiny):
    """``ref_val_picks`` is the reference policy's val picks wherever the reference is set: at init, when
    RCE begins after SFT (reference_policy=sft), and at every GRPO epoch under refresh_each_epoch; the
    validation after an epoch then reports what computing them from ``ref_params`` reports."""
    data = DeviceData.from_dataset(tiny)
    # only the phases each policy acts in: SFT then RCE; GRPO alone, two epochs (each refreshes at its start)
    for policy, epochs in (("sft", dict(grpo_epochs=0)),
                           ("refresh_each_epoch", dict(sft_epochs=0, rce_epochs=0, grpo_epochs=2, grpo_lr=0.05))):
        pipe = _pipeline(tiny, "v4_1", reference_policy=policy, sft_lr=0.05, **epochs)
        hp = pipe.hyperparameters()
        picks = jax.jit(lambda p: pipe.greedy_picks(p, data, "val"))
        evaluator = Evaluator(pipe)  # one compiled validation and evaluation for every phase
        validate = jax.jit(lambda s: evaluator.validate_epoch(s, jnp.int32(0), data, hp))
        direct = jax.jit(lambda s: evaluator.evaluate(s["params"], s["ref_params"], data, hp, "val"))
        state = jax.jit(pipe.init_state)(data, hp, jax.random.PRNGKey(0))
        np.testing.assert_array_equal(state["ref_val_picks"], picks(state["ref_params"]))
        seen = [np.asarray(state["ref_val_picks"])]
        for i, phase in enumerate(pipe.phases):
            state = jax.jit(functools.partial(pipe.begin_phase, i))(state, data, hp)
            train_epoch = jax.jit(functools.partial(pipe.train_epoch, i))
            for epoch in range(phase.epochs):
                state, _ = train_epoch(state, jnp.int32(epoch), data, hp)
                np.testing.assert_array_equal(state["ref_val_picks"], picks(state["ref_params"]))
                seen.append(np.asarray(state["ref_val_picks"]))
                _, val = validate(state)
                assert float(val["val_changed_vs_ref"]) == float(direct(state)["changed_vs_ref"])
        # the reference moved (when RCE began after SFT; with refresh at the second GRPO epoch) and its picks
        assert len(seen) == 3 and not np.array_equal(seen[0], seen[-1]), policy
        assert [p.kind for p in pipe.phases] == (["sft", "rce"] if policy == "sft" else ["grpo"])


def test_the_realised_accuracy_counts_a_seeded_subset_of_test_questions(tiny):
    from leverjax.errors import ConfigError

    data = DeviceData.from_dataset(tiny)
    every = _pipeline(tiny, "v4_1")
    test = every.split_index["test"]
    some, again, other = (_pipeline(tiny, "v4_1", test_questions=15, test_questions_seed=s) for s in (3, 3, 4))
    chosen = np.flatnonzero(some.test_questions)
    assert len(chosen) == 15 and set(chosen) <= set(test) and every.test_questions[test].all()
    np.testing.assert_array_equal(some.test_questions, again.test_questions)
    assert not np.array_equal(some.test_questions, other.test_questions)
    params = init_params(every.selector.config, jax.random.PRNGKey(1), data.emb.shape[-1], num_steps=every.num_steps)
    full, part = (Evaluator(p).evaluate(params, params, data, p.hyperparameters(), "test") for p in (every, some))
    _, per_question = Evaluator(every).evaluate(params, params, data, every.hyperparameters(), "test",
                                                per_question=True)
    rows = np.asarray(every.eval_batches("test")).reshape(-1)
    for n in range(1, SHOTS + 1):
        scores = np.asarray(per_question[f"realised_acc_{n}"])
        assert float(full[f"realised_acc_{n}"]) == pytest.approx(scores[rows >= 0].mean(), abs=1e-6)
        assert float(part[f"realised_acc_{n}"]) == pytest.approx(scores[np.isin(rows, chosen)].mean(), abs=1e-6)
        assert float(part[f"oracle_acc_{n}"]) == float(full[f"oracle_acc_{n}"])  # the truth counts every question
    with pytest.raises(ConfigError, match=f"test_questions=999 exceeds the {len(test)} test questions"):
        _pipeline(tiny, "v4_1", test_questions=999)
