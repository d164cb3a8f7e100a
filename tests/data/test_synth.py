"""The synthetic data set: structure, calibration, determinism, the exact oracle and learnability."""
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.data import load_npz, synth
from leverjax.data.synth import (
    ACC_LEVELS, GEN_METHODS, PARAM_NAMES, default_dataset_path, load_or_make_default, make_synthetic, oracle_accuracy,
    oracle_accuracy_np,
)
from leverjax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(num_examples=1500, num_queries=200, num_test_queries=50, pool_size=24, dim=32,
             max_trajectories=12)


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(seed=3, **SMALL)


def demo_rows(ds, traj):
    """Global emb rows [Q, M, S] of pool positions ``traj`` (−1 → row of position 0)."""
    q, m, s = traj.shape
    safe = np.maximum(ds.pool_ids, 0)
    return np.take_along_axis(safe, np.maximum(traj, 0).reshape(q, -1), 1).reshape(q, m, s)


def labelled_oracle(ds):
    """Oracle accuracy [Q, M] of every labelled trajectory (garbage where padded)."""
    q, m, s = ds.traj.shape
    rows = demo_rows(ds, ds.traj)
    return oracle_accuracy_np(ds.oracle, np.repeat(ds.query_ids, m), rows.reshape(-1, s)).reshape(q, m)


def retrieval_rows(ds, n):
    """Global rows [Q, n] of the n pool members most similar to the query in the observed embedding."""
    safe = np.maximum(ds.pool_ids, 0)
    cos = np.einsum("qd,qkd->qk", ds.emb[ds.query_ids], ds.emb[safe])
    cos[~ds.pool_mask] = -np.inf
    return np.take_along_axis(safe, np.argsort(-cos, axis=1, kind="stable")[:, :n], 1)


def random_pair_accuracy(ds):
    """Exact mean oracle accuracy over all ordered pairs of distinct pool members, per query [Q]."""
    out = np.zeros(ds.num_queries)
    for i in range(ds.num_queries):
        members = ds.pool_ids[i][ds.pool_mask[i]]
        a, b = np.meshgrid(members, members, indexing="ij")
        keep = a != b
        pairs = np.stack([a[keep], b[keep]], axis=1)
        out[i] = oracle_accuracy_np(ds.oracle, np.full(len(pairs), ds.query_ids[i]), pairs).mean()
    return out


def test_structure_splits_pools_and_trajectories(ds):
    n_train = int(0.8 * 200)
    assert ds.num_queries == 250 and ds.num_examples == 1500 and ds.dim == 32
    assert (ds.split[:n_train] == 0).all() and (ds.split[n_train:200] == 1).all() and (ds.split[200:] == 2).all()
    ids = ds.query_ids[:200]
    assert (np.diff(ids) > 0).all() and len(set(ds.query_ids.tolist())) == 250  # sorted, distinct
    assert ds.gen_methods == GEN_METHODS
    sizes = ds.pool_mask.sum(1)
    assert sizes.max() == 24 and sizes.min() < 24                      # ragged pools
    for i in range(ds.num_queries):
        pool = ds.pool_ids[i][ds.pool_mask[i]]
        assert len(set(pool.tolist())) == len(pool) and ds.query_ids[i] not in pool
        assert (ds.pool_ids[i, len(pool):] == -1).all()
        tr = [tuple(t) for t in ds.traj[i][ds.traj_mask[i]]]
        assert len(set(tr)) == len(tr)                                   # de-duplicated
    groups = ds.group_sizes
    assert groups.min() >= 5 and groups.max() <= 12 and len(set(groups.tolist())) > 3
    used = np.unique(ds.gen_method[ds.traj_mask])
    assert used.tolist() == [0, 1, 2, 3]
    # similar pools: most members are near the query in the observed embedding
    assert np.einsum("d,kd->k", ds.emb[ds.query_ids[0]], ds.emb[ds.pool_ids[0][ds.pool_mask[0]]]).mean() > 0.2


def test_labels_look_like_real_annotations(ds):
    mask = ds.traj_mask
    assert np.isin(ds.acc[mask], np.float32(ACC_LEVELS)).all()
    np.testing.assert_array_equal(ds.correct[mask], (ds.acc[mask] > 0).astype(np.float32))
    s = ds.summary()
    assert 0.4 < s["positive_ratio"] < 0.6
    assert s["all_negative_groups"] >= 5 and s["all_positive_groups"] >= 5
    assert 0 < np.isnan(ds.gt_prob[mask]).mean() < 0.1 and 0 < np.isnan(ds.rel[mask]).mean() < 0.1
    assert np.isnan(ds.gt_prob[~mask]).all()
    assert np.nanmax(ds.gt_prob) > 1.0                                   # can exceed 1, as in the reference
    oracle = labelled_oracle(ds)[mask]
    gt = ds.gt_prob[mask]
    known = ~np.isnan(gt)
    assert np.corrcoef(gt[known], oracle[known])[0, 1] > 0.5             # correlated with the truth
    # labels are draws whose expectation is the oracle accuracy
    assert abs(ds.acc[mask].mean() - oracle.mean()) < 0.03
    assert np.corrcoef(ds.acc[mask], oracle)[0, 1] > 0.4


def test_deterministic_for_a_seed():
    kw = dict(SMALL, num_examples=400, num_queries=40, num_test_queries=10, pool_size=12)
    a, b, c = make_synthetic(seed=5, **kw), make_synthetic(seed=5, **kw), make_synthetic(seed=6, **kw)
    for key in ("emb", "query_ids", "pool_ids", "traj", "acc", "correct", "gt_prob", "rel", "gen_method", "split"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    for key in a.oracle:
        np.testing.assert_array_equal(a.oracle[key], b.oracle[key])
    assert not np.array_equal(a.traj, c.traj)
    assert a.meta["generator"]["seed"] == 5 and a.meta["source"] == "leverjax.data.synth"
    assert {"created_at", "tool_version", "encoder"} <= set(a.meta)


def test_oracle_is_exact_jittable_and_vmappable(ds):
    o = ds.oracle
    assert o["params"].shape == (len(PARAM_NAMES),) and o["latent"].shape[0] == ds.num_examples
    oj = {k: jnp.asarray(v) for k, v in o.items()}
    rng = np.random.default_rng(0)
    q = ds.query_ids[:16]
    f = jax.jit(oracle_accuracy)
    for n in (1, 2, 3, 4):
        d = np.take_along_axis(ds.pool_ids[:16], rng.permuted(np.tile(np.arange(n + 1), (16, 1)), axis=1)[:, :n], 1)
        got = np.asarray(f(oj, jnp.asarray(q), jnp.asarray(d)))
        np.testing.assert_allclose(got, oracle_accuracy_np(o, q, d), rtol=1e-5, atol=1e-6)
        assert got.shape == (16,) and ((got >= 0) & (got <= 1)).all()
    batched = jax.vmap(oracle_accuracy, in_axes=(None, 0, 0))(oj, jnp.asarray(q).reshape(4, 4), jnp.asarray(d).reshape(4, 4, -1))
    np.testing.assert_allclose(np.asarray(batched).ravel(), got, rtol=1e-6)

    # an independent transcription of the documented formula for one query and two demonstrations
    p = dict(zip(PARAM_NAMES, o["params"].tolist()))
    qi, (a, b) = int(q[0]), (int(ds.pool_ids[0, 0]), int(ds.pool_ids[0, 1]))
    z = o["latent"].astype(np.float64)
    util = [p["rel_scale"] * (z[qi] @ z[j] - p["rel_center"]) + o["quality"][j] for j in (a, b)]
    total = ((p["position_decay"] * util[0] + util[1]) / (p["position_decay"] + 1.0) ** p["shot_norm"]
             - p["redundancy_scale"] * max(z[a] @ z[b] - p["redundancy_threshold"], 0.0) - p["shot_cost"])
    value = p["value_cap"] * np.tanh(total / p["value_cap"])
    pc = 1 / (1 + np.exp(-(value - o["difficulty"][qi])))
    want = pc * o["level_main"][qi] + (1 - pc) * o["alt_rate"][qi] * o["level_alt"][qi]
    np.testing.assert_allclose(float(f(oj, jnp.array([qi]), jnp.array([[a, b]]))[0]), want, rtol=1e-5)
    # order matters
    assert float(f(oj, jnp.array([qi]), jnp.array([[b, a]]))[0]) != pytest.approx(want, rel=1e-6)


def test_the_hidden_interaction_enters_the_oracle_and_only_where_asked(ds):
    """interaction_weight > 0 adds z_q·A·z_j to every demonstration's utility (A stored as
    oracle_interaction); the other draws of the world stay those of the world without it."""
    assert "interaction" not in ds.oracle
    kw = dict(SMALL, num_examples=600, num_queries=60, num_test_queries=10)
    plain = make_synthetic(seed=2, **kw)
    mixed = make_synthetic(seed=2, world={"interaction_weight": 2.0}, **kw)
    a = mixed.oracle["interaction"]
    assert a.shape == (mixed.oracle["latent"].shape[1],) * 2 and 1.5 < a.std() < 2.5
    np.testing.assert_array_equal(plain.emb, mixed.emb)
    np.testing.assert_array_equal(plain.oracle["quality"], mixed.oracle["quality"])
    o, p = mixed.oracle, dict(zip(PARAM_NAMES, mixed.oracle["params"].tolist()))
    z = o["latent"].astype(np.float64)
    qi, j = int(mixed.query_ids[0]), int(mixed.pool_ids[0, 0])
    util = p["rel_scale"] * (z[qi] @ z[j] - p["rel_center"]) + o["quality"][j] + z[qi] @ a.astype(np.float64) @ z[j]
    value = p["value_cap"] * np.tanh(util / p["value_cap"])  # one shot: total = util
    pc = 1 / (1 + np.exp(-(value - o["difficulty"][qi])))
    want = pc * o["level_main"][qi] + (1 - pc) * o["alt_rate"][qi] * o["level_alt"][qi]
    np.testing.assert_allclose(oracle_accuracy_np(o, [qi], [[j]])[0], want, rtol=1e-5)
    np.testing.assert_allclose(float(jax.jit(oracle_accuracy)(o, jnp.array([qi]), jnp.array([[j]]))[0]), want, rtol=1e-5)
    without = {k: v for k, v in o.items() if k != "interaction"}
    assert oracle_accuracy_np(without, [qi], [[j]])[0] != pytest.approx(want, rel=1e-4)


def test_the_interaction_is_diluted_over_the_prompt_as_documented():
    """interaction_dilution β scales each demonstration's z_q·A·z_j by n^−β in a prompt of n (a float64
    transcription at 3 shots); the draws are unchanged, so weight 2w with β = 1 is, at 2 shots, the world of
    weight w without dilution: the same trajectories, labels and 2-shot oracle."""
    kw = dict(SMALL, num_examples=600, num_queries=60, num_test_queries=10)
    plain = make_synthetic(seed=2, world={"interaction_weight": 2.0}, **kw)
    diluted = make_synthetic(seed=2, world={"interaction_weight": 4.0, "interaction_dilution": 1.0}, **kw)
    assert "interaction_dilution" not in plain.oracle and float(diluted.oracle["interaction_dilution"]) == 1.0
    for key in ("traj", "acc", "correct"):
        np.testing.assert_array_equal(getattr(plain, key), getattr(diluted, key))
    q = diluted.query_ids[:8]
    pairs = diluted.pool_ids[:8, :2]
    np.testing.assert_allclose(oracle_accuracy_np(diluted.oracle, q, pairs),
                               oracle_accuracy_np(plain.oracle, q, pairs), rtol=1e-6)
    assert not np.allclose(oracle_accuracy_np(diluted.oracle, q, pairs[:, :1]),
                           oracle_accuracy_np(plain.oracle, q, pairs[:, :1]), rtol=1e-3)

    o, p = diluted.oracle, dict(zip(PARAM_NAMES, diluted.oracle["params"].tolist()))
    z, a = o["latent"].astype(np.float64), o["interaction"].astype(np.float64)
    qi, rows = int(q[0]), [int(j) for j in diluted.pool_ids[0, :3]]
    util = [p["rel_scale"] * (z[qi] @ z[j] - p["rel_center"]) + o["quality"][j] + (z[qi] @ a @ z[j]) / 3
            for j in rows]
    weights = p["position_decay"] ** np.arange(2, -1, -1)
    redundancy = sum(max(z[rows[i]] @ z[rows[j]] - p["redundancy_threshold"], 0.0)
                     for i in range(3) for j in range(i + 1, 3))
    total = weights @ util / weights.sum() ** p["shot_norm"] - p["redundancy_scale"] * redundancy - 2 * p["shot_cost"]
    value = p["value_cap"] * np.tanh(total / p["value_cap"])
    pc = 1 / (1 + np.exp(-(value - o["difficulty"][qi])))
    want = pc * o["level_main"][qi] + (1 - pc) * o["alt_rate"][qi] * o["level_alt"][qi]
    np.testing.assert_allclose(oracle_accuracy_np(o, [qi], [rows])[0], want, rtol=1e-5)
    got = jax.jit(oracle_accuracy)(o, jnp.array([qi]), jnp.array([rows]))
    np.testing.assert_allclose(float(got[0]), want, rtol=1e-5)


def test_ground_truth_is_learnable_and_not_trivial(ds):
    mask = ds.traj_mask
    acc = labelled_oracle(ds)
    best = np.where(mask, acc, -1).max(1).mean()
    reward = np.where(mask, ds.correct + ds.acc, -1)                     # the default reward
    best_by_label = acc[np.arange(ds.num_queries), reward.argmax(1)].mean()
    random = random_pair_accuracy(ds).mean()
    retrieval = oracle_accuracy_np(ds.oracle, ds.query_ids, retrieval_rows(ds, 2)).mean()
    # at the real tables' sizes (okvqa): a few points separate random pairs from the best labelled pair
    assert best > random + 0.025                                         # the labels hold real signal
    assert best_by_label > random + 0.015                                # and a learner can see it
    assert random - 0.005 < retrieval < best - 0.02                      # retrieval is far from optimal


def test_more_shots_can_hurt_and_redundancy_costs(ds):
    by_shots = [oracle_accuracy_np(ds.oracle, ds.query_ids, retrieval_rows(ds, n)) for n in (1, 2, 3, 4)]
    hurt = by_shots[3] < by_shots[1] - 0.01
    assert 0.05 < hurt.mean() and not hurt.all()
    pair = retrieval_rows(ds, 2)
    same = np.stack([pair[:, 1], pair[:, 1]], axis=1)                    # the same demonstration twice
    assert oracle_accuracy_np(ds.oracle, ds.query_ids, same).mean() < by_shots[0].mean()


def test_invalid_options_are_config_errors():
    with pytest.raises(ConfigError, match="pool = 3 must be >= steps \\+ 2 = 4"):
        make_synthetic(pool_size=3)
    with pytest.raises(ConfigError, match="queries = 1 must be >= 2"):
        make_synthetic(num_queries=1)
    with pytest.raises(ConfigError, match="min_trajectories = 9 must be between 1 and trajectories = 4"):
        make_synthetic(max_trajectories=4, min_trajectories=9)
    with pytest.raises(ConfigError, match="examples = 50 must exceed"):
        make_synthetic(num_examples=50)
    with pytest.raises(ConfigError, match="allow only 12 distinct trajectories, fewer than min_trajectories = 14"):
        make_synthetic(pool_size=4, min_trajectories=14)


def test_default_set_shape_and_generation_time():
    start = time.perf_counter()
    full = make_synthetic()
    elapsed = time.perf_counter() - start
    assert elapsed < 30
    assert (full.num_examples, full.dim, full.pool_size, full.num_steps, full.max_trajectories) == (9009, 512, 64, 2, 16)
    assert [int((full.split == s).sum()) for s in range(3)] == [640, 160, 200]
    assert abs(full.summary()["positive_ratio"] - synth.PRESETS["okvqa"].sizes["positive_ratio"]) < 0.03


def test_default_is_generated_once_then_loaded(tmp_path, monkeypatch):
    calls = []

    def small(**kw):
        calls.append(1)
        return make_synthetic(num_examples=300, num_queries=20, num_test_queries=5, pool_size=10, dim=8)

    monkeypatch.setattr(synth, "make_synthetic", small)
    path = str(tmp_path / "cache" / "synth.npz")
    first = load_or_make_default(path)
    second = load_or_make_default(path)
    assert len(calls) == 1 and os.path.exists(path)
    np.testing.assert_array_equal(first.traj, second.traj)
    with open(path, "wb") as f:
        f.write(b"broken")                                               # a damaged cache is replaced
    third = load_or_make_default(path)
    assert len(calls) == 2 and third.has_oracle
    monkeypatch.setenv("LEVERJAX_DATA_CACHE", str(tmp_path / "elsewhere"))
    assert default_dataset_path() == str(tmp_path / "elsewhere" / f"synth_default_v{synth.GENERATOR_VERSION}.npz")


def test_command_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "s.npz"
    cmd = [sys.executable, "-m", "leverjax.data.synth", f"--out={out}", "--examples=400", "--queries=40",
           "--test_queries=10", "--pool=12", "--dim=16", "--seed=2"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "train 32, val 8, test 10" in res.stdout and "generated in" in res.stdout
    back = load_npz(str(out))
    assert back.has_oracle and back.meta["generator"]["seed"] == 2
    bad = subprocess.run(cmd[:4] + ["--pool=2"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid synthetic data option")
    assert "Traceback" not in bad.stderr
