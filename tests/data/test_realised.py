"""Realised VQA scores: one answer per prompt, drawn deterministically, whose mean is the oracle's expectation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.data import synth

SMALL = dict(seed=2, num_examples=600, num_queries=60, num_test_queries=20, pool_size=12, dim=16)


@pytest.fixture(scope="module")
def ds():
    return synth.make_synthetic(**SMALL)


def prompts(ds, n=3):
    return ds.query_ids, np.maximum(ds.pool_ids[:, :n], 0)


def test_the_hash_is_the_same_in_numpy_and_jax(ds):
    q, d = prompts(ds)
    seed = ds.oracle["answer_seed"]
    host = synth._answer_uniform(np, seed, q, d)
    device = np.asarray(jax.jit(lambda a, b: synth._answer_uniform(jnp, jnp.asarray(seed), a, b))(q, d))
    np.testing.assert_array_equal(host, device)
    assert host.dtype == np.float32 and 0 <= host.min() and host.max() < 1


def test_a_prompt_always_scores_the_same_and_another_draws_afresh(ds):
    q, d = prompts(ds)
    a = synth.realised_accuracy_np(ds.oracle, q, d)
    np.testing.assert_array_equal(a, synth.realised_accuracy_np(ds.oracle, q, d))
    np.testing.assert_array_equal(a, np.asarray(synth.realised_accuracy(ds.oracle, q, d)))
    assert set(np.round(np.unique(a).astype(np.float64), 6).tolist()) <= {0.0, 0.3, 0.6, 0.9, 1.0}
    swapped = d[:, ::-1]  # the same demonstrations in another order is another prompt
    u, v = (synth._answer_uniform(np, ds.oracle["answer_seed"], q, x) for x in (d, swapped))
    assert not np.any(u == v)
    other = synth._answer_uniform(np, np.uint32(ds.oracle["answer_seed"] + 1), q, d)
    assert not np.any(u == other)


def test_the_mean_over_answer_seeds_is_the_expected_accuracy(ds):
    q, d = prompts(ds, 2)
    expected = synth.oracle_accuracy_np(ds.oracle, q, d).astype(np.float64)
    draws = np.stack([synth.realised_accuracy_np({**ds.oracle, "answer_seed": np.uint32(s)}, q, d)
                      for s in range(3000)]).astype(np.float64)
    se = draws.std(0, ddof=1) / np.sqrt(len(draws))
    z = (draws.mean(0) - expected) / np.maximum(se, 1e-9)
    assert np.all(np.abs(z) < 4.5), np.abs(z).max()
    # and it is the 10-annotator form: each prompt's values are its query's levels and 0
    q0 = 0
    levels = {0.0, float(ds.oracle["level_main"][q[q0]]), float(ds.oracle["level_alt"][q[q0]])}
    assert set(np.round(draws[:, q0], 6).tolist()) <= {round(x, 6) for x in levels}


def test_files_without_an_answer_seed_have_no_realised_scores(ds):
    assert synth.has_realised(ds.oracle)
    old = {k: v for k, v in ds.oracle.items() if k != "answer_seed"}
    assert not synth.has_realised(old)
