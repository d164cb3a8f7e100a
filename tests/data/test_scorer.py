"""The oracle scorer against the simulator's formulas, and the prompt cache: one backend call per unique
prompt, kept on disk, resumed after a kill, refused for another scorer."""
import json

import numpy as np
import pytest

from leverjax.data import synth
from leverjax.data.scorer import LABELS, OracleScorer, PromptCache, prompt_key
from leverjax.errors import DataError


@pytest.fixture(scope="module")
def data():
    return synth.make_synthetic(seed=0, num_examples=200, num_queries=30,
                                num_test_queries=20, pool_size=8, max_trajectories=6, dim=8)


def prompts(data, n=2, count=40, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, data.emb.shape[0], count)
    d = np.stack([rng.choice(data.emb.shape[0], n, replace=False) for _ in range(count)])
    return q, d


def test_oracle_scorer_is_the_simulators_accuracy(data):
    q, d = prompts(data)
    exact = OracleScorer.for_dataset(data, "exact").score(q, d)
    realised = OracleScorer.for_dataset(data, "realised").score(q, d)
    np.testing.assert_array_equal(exact["acc"], synth.oracle_accuracy_np(data.oracle, q, d))
    np.testing.assert_array_equal(realised["acc"], synth.realised_accuracy_np(data.oracle, q, d))
    np.testing.assert_array_equal(realised["correct"], realised["acc"] > 0)
    # exact: P(score > 0) = p + (1 − p)·alt_rate with p = gt_prob, and E[acc] lies between the levels times it
    rate = data.oracle["alt_rate"][q]
    np.testing.assert_allclose(exact["correct"], exact["gt_prob"] + (1 - exact["gt_prob"]) * rate, rtol=1e-6)
    assert np.all(exact["acc"] <= exact["correct"] + 1e-6) and np.all(np.isnan(exact["rel"]))


def test_oracle_scorer_bad_input(data):
    scorer = OracleScorer.for_dataset(data)
    with pytest.raises(DataError, match="demonstration row 200 .* outside the data's 200 rows"):
        scorer.score(np.array([0]), np.array([[1, 200]]))
    with pytest.raises(DataError, match="has no ground truth"):
        OracleScorer({}, 10)
    no_seed = {k: v for k, v in data.oracle.items() if k != "answer_seed"}
    with pytest.raises(DataError, match="no answer seed"):
        OracleScorer(no_seed, 200, "realised")


class Counting:
    """A backend that counts what it is asked and answers a function of the prompt."""

    identity = {"scorer": "counting", "version": 1}

    def __init__(self):
        self.asked = []

    def score_batch(self, q, d):
        self.asked += [prompt_key(a, b) for a, b in zip(q.tolist(), d.tolist())]
        return [{"acc": (a + sum(b)) % 7 / 7, "correct": 1.0, "gt_prob": None, "rel": 0.5, "answer": f"a{a}"}
                for a, b in zip(q.tolist(), d.tolist())]


def test_identical_picks_cost_one_call_per_unique_prompt(tmp_path):
    backend = Counting()
    cache = PromptCache(backend, str(tmp_path / "cache.jsonl"), batch_size=3)
    q = np.array([1, 2, 3, 1])
    d = np.array([[4, 5], [6, 7], [8, 9], [4, 5]])
    run_a = cache.score(q, d)
    run_b = cache.score(q, d)  # a second run (or seed) with the same picks
    reordered = cache.score(np.array([1]), np.array([[5, 4]]))  # order matters: another prompt
    assert backend.asked == ["1|4,5", "2|6,7", "3|8,9", "1|5,4"]
    assert (cache.requests, cache.calls, cache.hits) == (9, 4, 5)
    for k in LABELS:
        np.testing.assert_array_equal(run_a[k], run_b[k])
    assert np.isnan(run_a["gt_prob"]).all() and list(run_a["answer"]) == ["a1", "a2", "a3", "a1"]
    assert reordered["acc"][0] == pytest.approx(10 % 7 / 7)
    mixed = cache.score_prompts([(1, [4, 5]), (2, [3]), (2, [3, 4, 5])])  # any number of demonstrations
    assert backend.asked[-2:] == ["2|3", "2|3,4,5"] and mixed["acc"][1] == pytest.approx(5 % 7 / 7)


def test_the_cache_file_resumes_and_drops_a_line_cut_short(tmp_path):
    path = str(tmp_path / "cache.jsonl")
    PromptCache(Counting(), path).score(np.array([1, 2]), np.array([[3, 4], [5, 6]]))
    with open(path, "a") as f:
        f.write('{"key": "9|1,2", "acc": 0.')  # a kill in the middle of a write
    again = Counting()
    cache = PromptCache(again, path)
    out = cache.score(np.array([1, 2, 9]), np.array([[3, 4], [5, 6], [1, 2]]))
    assert again.asked == ["9|1,2"] and cache.calls == 1 and out["acc"][2] == pytest.approx(12 % 7 / 7)
    with open(path) as f:
        lines = [json.loads(line) for line in f]  # every line whole again
    assert [e.get("key") for e in lines[1:]] == ["1|3,4", "2|5,6", "9|1,2"]


def test_a_cache_of_another_scorer_or_a_damaged_one_is_refused(tmp_path):
    path = str(tmp_path / "cache.jsonl")
    PromptCache(Counting(), path).score(np.array([1]), np.array([[3, 4]]))
    other = Counting()
    other.identity = {"scorer": "counting", "version": 2}
    with pytest.raises(DataError, match="written by another scorer .*version=1.*version=2"):
        PromptCache(other, path)
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(DataError, match="line 3 is not a cache entry"):
        PromptCache(Counting(), path)
    (tmp_path / "x.jsonl").write_text("hello\n")
    with pytest.raises(DataError, match="not a leverjax prompt cache"):
        PromptCache(Counting(), str(tmp_path / "x.jsonl"))
