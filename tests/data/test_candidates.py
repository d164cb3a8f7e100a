"""The candidate mix without a selector (leverjax.data.candidates), the diagnostics (leverjax.data.diagnose), and
the generation records through the original's RL JSON and back (leverjax.data.leverplus)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leverjax.data import candidates as cand_lib
from leverjax.data import leverplus, synth
from leverjax.data.diagnose import diagnose
from leverjax.data.npz import load_npz, save_npz
from leverjax.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=20, num_test_queries=10, pool_size=8,
                                max_trajectories=6, dim=16)


def test_the_original_mix_parses_and_bad_mixes_say_what_is_wrong():
    mix = cand_lib.parse_mix(cand_lib.ORIGINAL_MIX)
    assert mix == cand_lib.Mix(beam=5, samples=((1.0, 2), (1.3, 2)), random=1, retrieval=5)
    assert mix.total == 15 and cand_lib.parse_mix(mix.text()) == mix
    with pytest.raises(ConfigError, match="asks for no candidate"):
        cand_lib.parse_mix("beam=0,random=0")
    with pytest.raises(ConfigError, match="asks for no candidate"):
        cand_lib.parse_mix("")
    with pytest.raises(ConfigError, match="'greedy=2' is not one of"):
        cand_lib.parse_mix("beam=2,greedy=2")
    with pytest.raises(ConfigError, match="beam is given twice"):
        cand_lib.parse_mix("beam=2,beam=3")


def test_retrieval_windows_follow_the_similarity_ranking(tiny):
    rows = np.arange(3)
    got = cand_lib.retrieval_positions(tiny, rows, 4, 2)
    for i, r in enumerate(rows):
        valid = np.flatnonzero(tiny.pool_ids[r] >= 0)
        e = tiny.emb / np.linalg.norm(tiny.emb, axis=1, keepdims=True)
        cos = e[tiny.pool_ids[r, valid]] @ e[tiny.query_ids[r]]
        ranked = valid[np.argsort(-cos)]
        expected = [[ranked[j], ranked[j + 1]] for j in range(4)]  # the original's (r_i, r_{i+1})
        np.testing.assert_array_equal(got[i], expected)


def test_random_candidates_are_distinct_valid_positions(tiny):
    got = cand_lib.random_positions(tiny, np.arange(20), 30, 2, np.random.default_rng(0))
    for i in range(20):
        valid = set(np.flatnonzero(tiny.pool_ids[i] >= 0).tolist())
        for p in got[i].tolist():
            assert len(set(p)) == 2 and set(p) <= valid


def test_deduplication_keeps_the_first_place_and_the_highest_priority():
    P = cand_lib.Proposals
    props = [P("beam", np.array([[[0, 1], [1, 0], [2, 3]]]), rank=np.array([[0, 1, 2]])),
             P("sample", np.array([[[4, 5], [3, 2]]]), temperature=1.3),
             P("retrieval", np.array([[[5, 4], [6, 7]]])),
             P("random", np.array([[[7, 6], [-1, -1]]]))]
    out = cand_lib.deduplicate(props)[0]
    assert [(c["pointer"], c["method"]) for c in out] == [
        ((0, 1), "beam"), ((2, 3), "beam"), ((5, 4), "retrieval"), ((6, 7), "retrieval")]
    assert out[0]["rank"] == 0 and np.isnan(out[0]["temperature"])
    # a set the query already has is not proposed again
    out = cand_lib.deduplicate(props, existing=[[(1, 0), (4, 5)]])[0]
    assert [c["pointer"] for c in out] == [(2, 3), (6, 7)]


def _labels(n, value=0.5):
    return {"acc": np.full(n, value, np.float32), "correct": np.ones(n, np.float32),
            "gt_prob": np.full(n, np.nan, np.float32), "rel": np.full(n, np.nan, np.float32)}


def test_merge_keeps_the_old_trajectories_first_and_replace_drops_them(tiny):
    rows = np.array([0, 2])
    cands = [[{"pointer": (0, 1), "method": "beam", "rank": 0, "temperature": np.nan}],
             [{"pointer": (3, 2), "method": "sample", "rank": -1, "temperature": 1.3},
              {"pointer": (4, 5), "method": "random", "rank": -1, "temperature": np.nan}]]
    merged = cand_lib.combine(tiny, rows, cands, _labels(3), mode="merge")
    n0 = int(tiny.group_sizes[0])
    np.testing.assert_array_equal(merged.traj[0, :n0], tiny.traj[0, :n0])
    np.testing.assert_array_equal(merged.traj[0, n0], [0, 1])
    assert merged.gen_methods[merged.gen_method[2, tiny.group_sizes[2] + 1]] == "random"
    assert merged.gen_temperature[2, tiny.group_sizes[2]] == np.float32(1.3)
    replaced = cand_lib.combine(tiny, rows, cands, _labels(3), mode="replace")
    assert replaced.group_sizes[0] == 1 and replaced.group_sizes[2] == 2 and replaced.gen_rank[0, 0] == 0
    np.testing.assert_array_equal(replaced.traj[1], tiny.traj[1])  # other queries unchanged
    with pytest.raises(ConfigError, match="'append' is not one of merge, replace"):
        cand_lib.combine(tiny, rows, cands, _labels(3), mode="append")
    # with slots, M is the bound and not what was kept; the padding holds nothing
    mix = cand_lib.parse_mix("beam=2,random=1")
    slots = cand_lib.slots_for(tiny, mix, "merge")
    assert slots == tiny.max_trajectories + 3 and cand_lib.slots_for(tiny, mix, "replace") == tiny.max_trajectories
    padded = cand_lib.combine(tiny, rows, cands, _labels(3), mode="merge", slots=slots)
    assert padded.max_trajectories == slots > merged.max_trajectories
    np.testing.assert_array_equal(padded.group_sizes, merged.group_sizes)
    np.testing.assert_array_equal(padded.traj[:, :merged.max_trajectories], merged.traj)
    with pytest.raises(DataError, match="trajectories for one query do not fit 2 slots"):
        cand_lib.combine(tiny, rows, cands, _labels(3), mode="merge", slots=2)


def test_a_scorer_probability_becomes_a_schema_flag_and_a_missing_accuracy_is_an_error():
    got = cand_lib.schema_labels({"acc": np.array([0.2, 0.0, 0.7]), "correct": np.array([0.49, np.nan, 0.5]),
                                  "gt_prob": np.array([0.1, 0.2, 0.3]), "rel": np.full(3, np.nan)})
    np.testing.assert_array_equal(got["correct"], [0.0, 0.0, 1.0])
    with pytest.raises(DataError, match="no accuracy for prompt 1"):
        cand_lib.schema_labels({"acc": np.array([0.2, np.nan]), "correct": np.zeros(2), "gt_prob": np.zeros(2),
                                "rel": np.zeros(2)})


def test_generation_records_survive_the_npz_and_the_original_json(tiny, tmp_path):
    rows = tiny.split_index("train")
    cands = [[{"pointer": (1, 0), "method": "beam", "rank": 0, "temperature": np.nan},
              {"pointer": (2, 3), "method": "sample", "rank": -1, "temperature": 1.3}] for _ in rows]
    ds = cand_lib.combine(tiny, rows, cands, _labels(2 * len(rows), 0.6), mode="merge")
    save_npz(ds, str(tmp_path / "g.npz"))
    back = load_npz(str(tmp_path / "g.npz"))
    np.testing.assert_array_equal(back.gen_rank, ds.gen_rank)
    np.testing.assert_array_equal(np.isnan(back.gen_temperature), np.isnan(ds.gen_temperature))
    rl = leverplus.to_rl_data(ds, splits=("train", "val"))
    again, _ = leverplus.convert_rl_data(json.loads(json.dumps(rl)), ds.emb)
    q = int(np.flatnonzero(again.query_ids == ds.query_ids[rows[0]])[0])
    n = int(ds.group_sizes[rows[0]])
    np.testing.assert_array_equal(again.traj[q, :n], ds.traj[rows[0], :n])
    np.testing.assert_array_equal(again.gen_rank[q, :n], ds.gen_rank[rows[0], :n])
    np.testing.assert_allclose(again.gen_temperature[q, :n], ds.gen_temperature[rows[0], :n])
    assert [again.gen_methods[m] for m in again.gen_method[q, :n]] == \
        [ds.gen_methods[m] for m in ds.gen_method[rows[0], :n]]


def test_unlabelled_candidates_go_out_and_the_labellers_answers_come_back(tiny, tmp_path):
    rows = tiny.split_index("train")[:3]
    cands = [[{"pointer": (0, 1), "method": "beam", "rank": 0, "temperature": np.nan}] for _ in rows]
    ds = cand_lib.combine(tiny, rows, cands, _labels(3, 0.0), mode="replace")
    rl = leverplus.to_rl_data(ds, splits=("train",), labels=False)
    entry = rl[str(int(ds.query_ids[rows[0]]))]["pointer_candidates"][0]
    assert "vqa_acc_score" not in entry and entry["beam_rank"] == 0
    # the labeller's output: the same candidates with labels
    for i, key in enumerate(k for k in rl if k != "_meta"):
        for c in rl[key]["pointer_candidates"]:
            c.update(vqa_acc_score=0.3 * (i % 3), vqa_gt_prob=0.5)
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(rl))
    labels = leverplus.RLJsonLabels(str(path))
    q, d = cand_lib.prompts_of(ds, rows, cands)
    got = labels.score(q, d)
    keys = [k for k in rl if k != "_meta"]
    want = {int(k): 0.3 * (i % 3) for i, k in enumerate(keys)}
    np.testing.assert_allclose(got["acc"], [want[int(x)] for x in q], rtol=1e-6)
    np.testing.assert_array_equal(got["correct"], [float(want[int(x)] > 0) for x in q])
    with pytest.raises(DataError, match="has no candidate with pointer_global"):  # the prompt's order matters
        labels.score(q[:1], d[:1, ::-1])
    rl[keys[0]]["pointer_candidates"][0]["eval_failed"] = True
    path.write_text(json.dumps(rl))
    with pytest.raises(DataError, match="gave no usable label"):
        leverplus.RLJsonLabels(str(path)).score(q, d)


def test_the_diagnosis_counts_what_was_planted(tiny):
    rows = tiny.split_index("train")
    cands = [[{"pointer": (0, 1), "method": "beam", "rank": 0, "temperature": np.nan},
              {"pointer": (1, 2), "method": "beam", "rank": 1, "temperature": np.nan},
              {"pointer": (2, 3), "method": "beam", "rank": 2, "temperature": np.nan},
              {"pointer": (3, 4), "method": "random", "rank": -1, "temperature": np.nan}] for _ in rows]
    # per query accuracies 0.3, 0.6, 1.0, 0.0 (so beam rank and accuracy agree inversely: ρ = +1) except the
    # first query, where every candidate scores 0 (no positive, flat)
    acc = np.tile([0.3, 0.6, 1.0, 0.0], len(rows)).astype(np.float32)
    acc[:4] = 0.0
    labels = {"acc": acc, "correct": (acc > 0).astype(np.float32), "gt_prob": acc.copy(),
              "rel": np.full(acc.shape, np.nan, np.float32)}
    ds = cand_lib.combine(tiny, rows, cands, labels, mode="replace")
    d = diagnose(ds, "train")
    n = len(rows)
    assert d["queries"] == n and d["trajectories"] == 4 * n
    assert d["zero_positive_share"] == pytest.approx(1 / n) and d["flat_acc_share"] == pytest.approx(1 / n)
    assert d["positive_share"] == pytest.approx(3 * (n - 1) / (4 * n))
    assert d["methods"]["random"] == {"count": n, "positive_rate": 0.0, "mean_acc": 0.0, "mean_gt_prob": 0.0}
    assert d["rank_acc_spearman"] == pytest.approx(1.0) and d["rank_acc_queries"] == n - 1
    # best minus top beam: 1.0 - 0.3 = 0.7 on every query but the flat one (0)
    assert d["best_minus_top_beam"] == pytest.approx(0.7 * (n - 1) / n)
    assert d["gap_above_0_2_share"] == pytest.approx((n - 1) / n)
    assert d["duplicate_rate"] == 0.0 and d["spearman_gt_prob_acc"] == pytest.approx(1.0)
