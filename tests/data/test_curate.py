"""The data transforms (leverjax.data.curate) on planted groups: one test per threshold of the original's scripts,
at the threshold and just past it."""
from __future__ import annotations

import numpy as np
import pytest

from leverjax.data import curate as curate_lib
from leverjax.data.npz import dataset_from_arrays
from leverjax.errors import ConfigError, DataError

S = 2


def planted(groups, *, accs=None, extra_val: int = 1):
    """A data set whose train query i has the labels ``groups[i]`` (a list of 0/1 correct flags; acc = the
    flag unless ``accs[i]`` gives the accuracies), plus ``extra_val`` val queries of one positive each."""
    groups = list(groups) + [[1]] * extra_val
    q, m = len(groups), max(len(g) for g in groups)
    k = m + S
    emb = np.random.default_rng(0).normal(size=(q * (k + 1), 4)).astype(np.float32)
    pool = np.arange(q * (k + 1)).reshape(q, k + 1)
    traj = np.full((q, m, S), -1, np.int32)
    correct = np.zeros((q, m), np.float32)
    acc = np.zeros((q, m), np.float32)
    for i, g in enumerate(groups):
        for j, c in enumerate(g):
            traj[i, j] = (j, j + 1)
            correct[i, j] = c
            acc[i, j] = accs[i][j] if accs is not None and i < len(accs) else c
    split = np.array([0] * (q - extra_val) + [1] * extra_val, np.int8)
    return dataset_from_arrays(dict(
        schema_version=np.asarray(1), emb=emb, query_ids=pool[:, 0], pool_ids=pool[:, 1:], traj=traj, acc=acc,
        correct=correct, gt_prob=np.full((q, m), np.nan, np.float32), rel=np.full((q, m), np.nan, np.float32),
        gen_method=np.where(traj[..., 0] >= 0, 0, -1).astype(np.int8), gen_methods=np.array(["beam"]), split=split,
        meta=np.asarray("{}")), source="planted")


def kept_train(ds, spec, **kw) -> list[int]:
    """The planted train queries (by their index) that ``spec`` keeps."""
    out, _ = curate_lib.curate(ds, spec, **kw)
    ids = ds.query_ids[ds.split == 0].tolist()
    return [ids.index(int(q)) for q in out.query_ids[out.split == 0]]


def test_balanced_keeps_positive_shares_from_0_40_to_0_60():
    ds = planted([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [1, 0]])
    # shares 0.40 (kept), 0.33 (dropped), 0.60 (kept), 0.67 (dropped), 0.50 (kept)
    assert kept_train(ds, "balanced") == [0, 2, 4]


def test_strict_balanced_needs_two_positives():
    ds = planted([[1, 1, 0, 0, 0], [1, 0, 0, 0]])  # 2 positives kept; 1 dropped
    assert kept_train(ds, "strict_balanced") == [0]


def test_strict_balanced_needs_three_negatives():
    ds = planted([[1, 1, 0, 0, 0], [1, 1, 0, 0]])  # share 0.5 both; 3 negatives kept, 2 dropped
    assert kept_train(ds, "strict_balanced") == [0]


def test_strict_balanced_caps_the_positive_share_at_0_6():
    ds = planted([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0]])
    # shares 0.5 (kept), 0.625 (dropped), 0.667 (dropped)
    assert kept_train(ds, "strict_balanced") == [0]
    at = planted([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]])  # 0.43 and exactly 0.6: both kept
    assert kept_train(at, "strict_balanced") == [0, 1]


def test_low_pos_ratio_needs_a_positive_three_negatives_and_a_share_of_at_most_0_45():
    ds = planted([[0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    # no positive (dropped); 0.25 with 3 negatives (kept); 2 negatives (dropped); 0.4 (kept); 0.5 (dropped)
    assert kept_train(ds, "low_pos_ratio") == [1, 3]


def test_diverse_needs_two_distinct_accuracies():
    ds = planted([[1, 1], [1, 1], [0, 0]], accs=[[1.0, 1.0], [1.0, 0.3], [0.0, 0.0]])
    assert kept_train(ds, "diverse") == [1]


def test_mine_positives_keeps_eight_best_positives_then_four_hard_negatives():
    flags = [1] * 10 + [0] * 6
    accs = [[0.3, 1.0, 0.6, 0.9, 0.3, 1.0, 0.6, 0.9, 0.3, 0.6] + [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    ds = planted([flags, [0, 0, 0]], accs=accs)
    out, record = curate_lib.curate(ds, "mine_positives")
    assert kept_train(ds, "mine_positives") == [0]  # the query without a positive is dropped
    r = int(np.flatnonzero(out.query_ids == ds.query_ids[0])[0])
    n = int(out.traj_mask[r].sum())
    assert n == 12
    np.testing.assert_allclose(out.acc[r, :8], [1.0, 1.0, 0.9, 0.9, 0.6, 0.6, 0.6, 0.3], rtol=1e-6)
    assert out.correct[r, :8].all() and not out.correct[r, 8:12].any()
    # ties keep the data's order: the positives of accuracy 1.0 were trajectories 1 and 5
    np.testing.assert_array_equal(out.traj[r, :2, 0], [1, 5])
    np.testing.assert_array_equal(out.traj[r, 8:12, 0], [10, 11, 12, 13])
    assert record["train"] == {"step": "mine_positives", "queries": 1, "trajectories": 12, "positive_share": 8 / 12}


def test_transforms_compose_in_order_and_leave_other_splits_alone():
    ds = planted([[1, 1, 0, 0, 0], [1] * 10 + [0] * 4, [1, 0, 0, 0, 0]], extra_val=2)
    out, record = curate_lib.curate(ds, "mine_positives+strict_balanced")
    # mining cuts query 1 to 8 positives + 4 negatives (share 0.67): strict_balanced then drops it
    assert kept_train(ds, "mine_positives+strict_balanced") == [0]
    assert [s["step"] for s in record["steps"]] == ["input", "mine_positives", "strict_balanced"]
    assert (out.split == 1).sum() == 2
    np.testing.assert_array_equal(out.traj[out.split == 1], ds.traj[ds.split == 1][:, :out.max_trajectories])


def test_the_subsample_is_seeded_and_taken_after_the_transforms():
    ds = planted([[1, 0]] * 20 + [[1, 1, 1]] * 10)
    a = kept_train(ds, "balanced", queries=5, seed=3)
    assert a == kept_train(ds, "balanced", queries=5, seed=3) != kept_train(ds, "balanced", queries=5, seed=4)
    assert len(a) == 5 and max(a) < 20  # only balanced queries


def test_bad_specs_and_empty_results_are_one_clear_error():
    ds = planted([[1, 1, 1]])
    with pytest.raises(ConfigError, match="'balance' is not a transform"):
        curate_lib.curate(ds, "balance")
    with pytest.raises(DataError, match="balanced leaves no training query"):
        curate_lib.curate(ds, "balanced")
    with pytest.raises(DataError, match="data_queries=5 exceeds the 1 training queries"):
        curate_lib.curate(ds, "none", queries=5)
