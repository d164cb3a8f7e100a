"""The reference selections against brute force on a tiny synthetic set: every ordered tuple for the random
expectation, every candidate for the oracle's greedy steps, every labelled trajectory for the best one."""
import itertools
import math

import numpy as np
import pytest

from leverjax.core import baselines
from leverjax.data import synth

SYNTH = dict(seed=1, num_examples=300, num_queries=40, num_test_queries=12, pool_size=8, max_trajectories=6, dim=16)


@pytest.fixture(scope="module")
def ds():
    return synth.make_synthetic(**SYNTH)


@pytest.fixture(scope="module")
def refs(ds):
    return baselines.oracle_references(ds, baselines.evaluation_queries(ds, "test"), samples=2048, seed=0)


def acc(ds, q, rows):
    return float(synth.oracle_accuracy_np(ds.oracle, np.array([ds.query_ids[q]]), np.array([rows]))[0])


def accs(ds, q, rows):
    rows = np.asarray(rows)
    return synth.oracle_accuracy_np(ds.oracle, np.full(len(rows), ds.query_ids[q]), rows).astype(np.float64)


def test_evaluation_queries_are_the_split_with_labels(ds):
    index = baselines.evaluation_queries(ds, "test")
    assert len(index) == 12 and (ds.split[index] == 2).all() and ds.traj_mask[index].any(-1).all()
    with pytest.raises(ValueError, match="not one of"):
        baselines.evaluation_queries(ds, "dev")


def test_similarity_is_the_nearest_pool_candidates_most_similar_first(ds):
    for q in baselines.evaluation_queries(ds, "test"):
        valid = np.flatnonzero(ds.pool_ids[q] >= 0)
        e = ds.emb.astype(np.float64)
        cos = [e[ds.pool_ids[q, p]] @ e[ds.query_ids[q]] / np.linalg.norm(e[ds.pool_ids[q, p]])
               / np.linalg.norm(e[ds.query_ids[q]]) for p in valid]
        want = [int(valid[i]) for i in sorted(range(len(valid)), key=lambda i: -cos[i])[:4]]
        assert baselines.similarity_positions(ds, q, 4).tolist() == want


def test_oracle_references_match_brute_force(ds, refs):
    index = baselines.evaluation_queries(ds, "test")
    rand = {n: [] for n in range(1, 5)}
    sim, best, greedy = ({n: [] for n in range(1, 5)} for _ in range(3))
    for q in index:
        rows = [int(r) for r in ds.pool_ids[q] if r >= 0]
        for n in range(1, 5):
            rand[n].append(accs(ds, q, list(itertools.permutations(rows, n))).mean())
        near = [int(ds.pool_ids[q, p]) for p in baselines.similarity_positions(ds, q, 4)]
        chosen = []
        for n in range(1, 5):
            sim[n].append(acc(ds, q, near[:n]))
            chosen.append(max((r for r in rows if r not in chosen), key=lambda r: acc(ds, q, chosen + [r])))
            greedy[n].append(acc(ds, q, chosen))
        labelled = [[int(ds.pool_ids[q, p]) for p in t] for t, m in zip(ds.traj[q], ds.traj_mask[q]) if m]
        for n in (1, 2):
            best[n].append(max(acc(ds, q, t[:n]) for t in labelled))
        # the greedy pair is no better than the best pair, and one step of greedy is the exact best
        assert greedy[1][-1] == pytest.approx(max(acc(ds, q, [r]) for r in rows), abs=1e-6)
        assert greedy[2][-1] <= accs(ds, q, list(itertools.permutations(rows, 2))).max() + 1e-6
    r = refs["random"]
    for n in (1, 2):  # exact
        assert r["exact"][n] and r["stderr"][n] == 0.0
        assert r["acc"][n] == pytest.approx(np.mean(rand[n]), abs=1e-5)
    for n in (3, 4):  # seeded Monte Carlo: within 5 standard errors of the exact expectation
        assert not r["exact"][n] and 0 < r["stderr"][n] < 0.01
        assert abs(r["acc"][n] - np.mean(rand[n])) < 5 * r["stderr"][n]
    for n in range(1, 5):
        assert refs["similarity"]["acc"][n] == pytest.approx(np.mean(sim[n]), abs=1e-5)
        assert refs["oracle_greedy"]["acc"][n] == pytest.approx(np.mean(greedy[n]), abs=1e-5)
    assert refs["best_labelled"]["acc"][1] == pytest.approx(np.mean(best[1]), abs=1e-5)
    assert refs["best_labelled"]["acc"][2] == pytest.approx(np.mean(best[2]), abs=1e-5)
    assert refs["best_labelled"]["acc"][3] is None and refs["best_labelled"]["acc"][4] is None  # S = 2
    assert refs["oracle_greedy"]["acc"][1] >= refs["best_labelled"]["acc"][1] - 1e-6


def test_whole_set_random_matches_every_candidate(ds, refs):
    """The original's baseline draws from every example but the query: at 1 and 2 shots its Monte Carlo
    mean is within 5 standard errors of the exact mean over every row (every ordered pair of rows)."""
    index = baselines.evaluation_queries(ds, "test")
    n_rows = ds.emb.shape[0]
    exact = {1: [], 2: []}
    for q in index:
        others = np.array([r for r in range(n_rows) if r != ds.query_ids[q]])
        exact[1].append(accs(ds, q, others[:, None]).mean())
        pairs = np.array([(a, b) for a in others for b in others if a != b])
        exact[2].append(accs(ds, q, pairs).mean())
    r = refs["random_all"]
    for n in (1, 2):
        assert 0 < r["stderr"][n] < 0.01
        assert abs(r["acc"][n] - np.mean(exact[n])) < 5 * r["stderr"][n], (n, r["acc"][n], np.mean(exact[n]))
    # it is not the pool's random selection (pools hold near neighbours): the two differ on this set
    assert abs(r["acc"][1] - refs["random"]["acc"][1]) > 5 * r["stderr"][1]


def test_whole_set_draws_are_distinct_and_never_the_query():
    rng = np.random.default_rng(0)
    draws = baselines._whole_set_draws(rng, 5, 2, 3, 4000)
    assert draws.shape == (4000, 3) and not (draws == 2).any() and draws.min() >= 0 and draws.max() <= 4
    assert all(len(set(row)) == 3 for row in draws.tolist())
    counts = np.bincount(draws[:, 0], minlength=5)  # the first demonstration is uniform over the 4 others
    assert counts[2] == 0 and np.all(np.abs(counts[[0, 1, 3, 4]] - 1000) < 150)


def test_monte_carlo_is_seeded(ds, refs):
    index = baselines.evaluation_queries(ds, "test")
    again = baselines.oracle_references(ds, index, samples=2048, seed=0)
    other = baselines.oracle_references(ds, index, samples=2048, seed=1)
    assert again["random"]["acc"] == refs["random"]["acc"]
    assert other["random"]["acc"][3] != refs["random"]["acc"][3] and other["random"]["acc"][1] == refs["random"]["acc"][1]
    assert again["random_all"]["acc"] == refs["random_all"]["acc"] and other["random_all"]["acc"] != refs["random_all"]["acc"]


def test_offline_references_match_direct_counts(ds):
    index = baselines.evaluation_queries(ds, "val")
    rewards = ds.acc + ds.correct  # any per-trajectory reward
    out = baselines.offline_references(ds, index, rewards, shots=4)
    means, p, hit, hit_r, top1 = [], [], [], [], []
    for q in index:
        m = ds.traj_mask[q]
        r = rewards[q][m]
        trajs = [tuple(t) for t in ds.traj[q][m]]
        k = int((ds.pool_ids[q] >= 0).sum())
        means.append(r.mean())
        p.append(len(trajs) / (k * (k - 1)))
        first = tuple(baselines.similarity_positions(ds, q, 2))
        hit.append(first in trajs)
        if first in trajs:
            hit_r.append(r[trajs.index(first)])
        cos = baselines.pool_cosines(ds, q)
        top1.append(r[int(np.argmax([cos[list(t)].mean() for t in trajs]))])
    assert out["random"]["expected_reward"] == pytest.approx(np.mean(means))
    assert out["random"]["top1_reward"] == out["random"]["expected_reward"]
    assert out["random"]["greedy_labelled"] == pytest.approx(np.mean(p))
    assert out["similarity"]["greedy_labelled"] == pytest.approx(np.mean(hit))
    assert out["similarity"]["greedy_labelled_reward"] == pytest.approx(np.mean(hit_r))
    assert out["similarity"]["top1_reward"] == pytest.approx(np.mean(top1))
    assert "expected_reward" not in out["similarity"]  # does not apply to a retrieval
    assert -1.0 <= out["random"]["redundancy"] <= 1.0 and out["similarity"]["redundancy"] > out["random"]["redundancy"]


def test_compute_is_json_ready_and_skips_the_oracle_on_real_data(ds):
    import dataclasses
    import json

    real = dataclasses.replace(ds, oracle={})
    out = baselines.compute(real, ds.acc, shots=3)
    text = json.dumps(baselines.json_ready(out), allow_nan=False)
    assert "oracle" not in out["splits"]["test"] and out["shots"] == 3 and not out["has_oracle"]
    assert json.loads(text)["splits"]["val"]["queries"] == len(baselines.evaluation_queries(ds, "val"))
    with pytest.raises(ValueError, match="no oracle"):
        baselines.oracle_references(real, baselines.evaluation_queries(ds, "test"))
    assert baselines.json_ready({1: math.nan}) == {"1": None}
