"""The .npz schema: every validation rule, load/save, the Dataset container and the filters."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.data import dataset_from_arrays, filter_queries, load_npz, save_npz, validate_arrays
from leverjax.data.device import DeviceData
from leverjax.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_arrays() -> dict:
    """A small valid file: N = 12, d = 4, Q = 4 (2 train, 1 val, 1 test), K = 5, M = 3, S = 2."""
    rng = np.random.default_rng(0)
    pool_ids = np.array([
        [1, 2, 3, 4, 5],
        [6, 7, 8, -1, -1],
        [0, 2, 4, 6, 8],
        [9, 10, 11, 1, -1],
    ], np.int32)
    traj = np.array([
        [[0, 1], [2, 3], [4, 0]],
        [[0, 2], [1, 0], [-1, -1]],
        [[3, 4], [-1, -1], [-1, -1]],
        [[0, 3], [3, 0], [1, 2]],
    ], np.int32)
    mask = traj[..., 0] >= 0
    acc = np.where(mask, [[1.0, 0.3, 0.0], [0.6, 0.0, 0.0], [0.9, 0.0, 0.0], [0.0, 0.0, 0.0]], 0.0)
    gt_prob = np.where(mask, rng.random((4, 3)), np.nan)
    gt_prob[0, 1] = np.nan
    return {
        "schema_version": np.asarray(1),
        "emb": rng.standard_normal((12, 4)).astype(np.float32),
        "query_ids": np.array([0, 3, 7, 11], np.int32),
        "pool_ids": pool_ids,
        "traj": traj,
        "acc": acc.astype(np.float32),
        "correct": (acc > 0).astype(np.float32),
        "gt_prob": gt_prob.astype(np.float32),
        "rel": np.where(mask, 0.5, np.nan).astype(np.float32),
        "gen_method": np.where(mask, [[0, 1, 2], [0, 3, 0], [1, 0, 0], [0, 0, 3]], -1).astype(np.int8),
        "gen_methods": np.array(["beam", "sample", "retrieval", "random"]),
        "split": np.array([0, 0, 1, 2], np.int8),
        "meta": np.asarray(json.dumps({"source": "test"})),
    }


def broken(**changes) -> dict:
    arrays = make_arrays()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return arrays


def with_item(key: str, index: tuple, value) -> dict:
    arrays = make_arrays()
    a = arrays[key].copy()
    a[index] = value
    arrays[key] = a
    return arrays


def test_valid_file_loads_with_masks_and_sizes():
    ds = dataset_from_arrays(make_arrays(), source="t")
    assert (ds.num_queries, ds.pool_size, ds.max_trajectories, ds.num_steps) == (4, 5, 3, 2)
    assert (ds.num_examples, ds.dim) == (12, 4)
    assert ds.pool_mask.sum() == 17 and ds.traj_mask.tolist()[1] == [True, True, False]
    assert ds.group_sizes.tolist() == [3, 2, 1, 3]
    assert ds.gen_methods == ("beam", "sample", "retrieval", "random")
    assert ds.meta == {"source": "test"} and not ds.has_oracle
    assert ds.emb.dtype == np.float32 and ds.traj.dtype == np.int32 and ds.split.dtype == np.int8
    assert ds.split_index("train").tolist() == [0, 1] and ds.split_index("test").tolist() == [3]


RULES = [
    ("missing key", broken(traj=None), "required key 'traj' is missing"),
    ("unknown key", broken(extra=np.zeros(3)), "key 'extra' is not part of schema v1"),
    ("schema version", broken(schema_version=np.asarray(2)), "schema_version = 2 is not supported"),
    ("schema version dtype", broken(schema_version=np.asarray(1.0)), "schema_version must be an integer scalar"),
    ("emb dtype", broken(emb=np.zeros((12, 4), np.int64)), "emb has dtype int64 but must hold floats"),
    ("id dtype float", broken(query_ids=np.array([0.0, 3, 7, 11])), "query_ids has dtype float64 but must hold integers"),
    ("traj dtype float", broken(traj=make_arrays()["traj"].astype(np.float32)), "traj has dtype float32 but must hold integers"),
    ("acc dtype str", broken(acc=np.full((4, 3), "x")), "acc has dtype <U1 but must hold numbers"),
    ("rank", broken(acc=np.zeros(4, np.float32)), "acc has rank 1 (shape (4,)) but must have rank 2"),
    ("emb rank", broken(emb=np.zeros((12, 4, 1), np.float32)), "emb has rank 3"),
    ("Q mismatch pool", broken(pool_ids=make_arrays()["pool_ids"][:3]), "pool_ids has shape (3, 5) but must be"),
    ("Q mismatch traj", broken(traj=make_arrays()["traj"][:3]), "traj has shape (3, 3, 2)"),
    ("M mismatch", broken(acc=np.zeros((4, 4), np.float32)), "acc has shape (4, 4) but must be [Q, M]"),
    ("M mismatch gen", broken(gen_method=np.zeros((4, 2), np.int8)), "gen_method has shape (4, 2)"),
    ("split shape", broken(split=np.zeros(5, np.int8)), "split has shape (5,) but must be [Q]"),
    ("S > K", broken(traj=np.zeros((4, 3, 6), np.int32)), "traj has S = 6 steps but pools have only K = 5"),
    ("NaN emb", with_item("emb", (3, 2), np.nan), "emb[3, 2] = nan is not finite"),
    ("inf emb", with_item("emb", (5, 0), np.inf), "emb[5, 0] = inf is not finite"),
    ("query id", with_item("query_ids", (2,), 12), "query_ids[2] = 12 is outside emb (N = 12 rows)"),
    ("query id negative", with_item("query_ids", (1,), -1), "query_ids[1] = -1 is outside emb"),
    ("pool id high", with_item("pool_ids", (1, 2), 12), "pool_ids[1, 2] = 12 is outside emb (N = 12 rows)"),
    ("pool id low", with_item("pool_ids", (2, 0), -2), "pool_ids[2, 0] = -2 is invalid"),
    ("traj outside pool", with_item("traj", (3, 2, 1), 5), "traj[3, 2, 1] = 5 is outside the pool (K = 5)"),
    ("traj below -1", with_item("traj", (0, 1, 0), -4), "traj[0, 1, 0] = -4 is invalid"),
    ("traj padded slot", with_item("traj", (1, 1, 0), 3), "traj[1, 1, 0] = 3 points at a padded pool slot (pool_ids[1, 3] = -1)"),
    ("traj repeat", with_item("traj", (0, 2, 1), 4), "traj[0, 2] = [4, 4] repeats pool position 4"),
    ("traj partial", with_item("traj", (2, 1, 0), 2), "traj[2, 1] = [2, -1] is partially padded"),
    ("acc above 1", with_item("acc", (0, 1), 1.5), "acc[0, 1] = 1.5 is outside [0, 1]"),
    ("acc negative", with_item("acc", (3, 0), -0.1), "acc[3, 0] = -0.1 is outside [0, 1]"),
    ("acc NaN", with_item("acc", (0, 2), np.nan), "acc[0, 2] = nan is outside [0, 1]"),
    ("correct", with_item("correct", (1, 0), 0.5), "correct[1, 0] = 0.5 is not 0 or 1"),
    ("gt_prob inf", with_item("gt_prob", (0, 0), np.inf), "gt_prob[0, 0] = inf is infinite"),
    ("gen_method", with_item("gen_method", (3, 1), 4), "gen_method[3, 1] = 4 is outside gen_methods (G = 4 names)"),
    ("split value", with_item("split", (2,), 3), "split[2] = 3 is not a known split"),
    ("empty train", broken(split=np.array([1, 1, 1, 2], np.int8)), "split has no train query"),
    ("int64 too big", broken(query_ids=np.array([0, 3, 7, 2**40])), "query_ids[3] = 1099511627776 does not fit int32"),
    ("meta JSON", broken(meta=np.asarray("{not json")), "meta is not valid JSON"),
    ("meta object", broken(meta=np.asarray("[1, 2]")), "meta must be a JSON object"),
    ("meta type", broken(meta=np.asarray(3)), "meta has dtype int64 but must hold strings"),
    ("gen_methods empty", broken(gen_methods=np.array([], dtype=str)), "gen_methods is empty"),
]


@pytest.mark.parametrize("name,arrays,message", RULES, ids=[r[0] for r in RULES])
def test_every_rule_fails_with_one_clear_message(name, arrays, message):
    with pytest.raises(DataError) as e:
        validate_arrays(arrays, source="data.npz")
    text = str(e.value)
    assert text.startswith("data.npz: ") and message in text, text
    assert "\n" not in text


def test_ignored_where_padded_and_int64_accepted():
    arrays = make_arrays()
    arrays["acc"][1, 2] = 7.0        # padded trajectory: labels carry no meaning
    arrays["correct"][2, 1] = 0.5
    arrays["gen_method"][2, 2] = 100
    arrays["gt_prob"][0, 0] = np.nan  # unknown is allowed
    for key in ("query_ids", "pool_ids", "traj", "split", "gen_method"):
        arrays[key] = arrays[key].astype(np.int64)
    ds = dataset_from_arrays(arrays, source="t")
    assert ds.query_ids.dtype == np.int32 and ds.gen_method.dtype == np.int8


def test_save_load_roundtrip_is_exact_and_atomic(tmp_path):
    arrays = make_arrays()
    arrays["oracle_params"] = np.arange(3, dtype=np.float32)
    ds = dataset_from_arrays(arrays, source="t")
    path = tmp_path / "sub" / "data"      # no .npz suffix, folder created
    save_npz(ds, str(path))
    assert os.listdir(tmp_path / "sub") == ["data"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    back = load_npz(str(path))
    for key in ("emb", "query_ids", "pool_ids", "traj", "acc", "correct", "gt_prob", "rel", "gen_method", "split"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    assert back.meta == ds.meta and back.gen_methods == ds.gen_methods
    assert back.has_oracle and back.oracle["params"].tolist() == [0.0, 1.0, 2.0]
    stored = np.load(str(path))
    assert "oracle_params" in stored.files and json.loads(str(stored["meta"])) == {"source": "test"}


def test_files_that_are_not_npz(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_npz(str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="is a directory"):
        load_npz(str(tmp_path))
    text = tmp_path / "text.npz"
    text.write_text("hello, not an archive\n")
    with pytest.raises(DataError, match="is not an .npz archive"):
        load_npz(str(text))
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(str(npy))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{**make_arrays(), "meta": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(DataError, match="key 'meta' holds pickled Python objects"):
        load_npz(str(pickled))
    empty = tmp_path / "empty.npz"
    np.savez(empty)
    with pytest.raises(DataError, match="required key 'schema_version' is missing"):
        load_npz(str(empty))


def test_unwritable_path_is_a_data_error(tmp_path):
    ds = dataset_from_arrays(make_arrays(), source="t")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot be written"):
        save_npz(ds, str(blocker / "data.npz"))


def test_subset_and_device_arrays():
    ds = dataset_from_arrays(make_arrays(), source="t")
    sub = ds.subset(np.array([3, 1]))
    assert sub.query_ids.tolist() == [11, 3] and sub.split.tolist() == [2, 0]
    assert sub.traj.shape == (2, 3, 2) and sub.emb is ds.emb
    dev = DeviceData.from_dataset(ds)
    assert dev.traj_mask.shape == (4, 3) and bool(dev.pool_mask[1, 3]) is False
    assert dev.emb.dtype == np.float32 and int(dev.pool_ids.min()) == 0


def test_filter_queries_counts():
    ds = dataset_from_arrays(make_arrays(), source="t")
    same, counts = filter_queries(ds)
    assert same.num_queries == 4 and counts["kept"] == 4
    small, counts = filter_queries(ds, min_group_size=2)
    assert small.query_ids.tolist() == [0, 3, 11]
    assert counts == {"queries_in": 4, "kept": 3, "dropped_small_group": 1, "dropped_no_positive": 0,
                      "kept_train": 2, "kept_val": 0, "kept_test": 1}
    pos, counts = filter_queries(ds, require_positive_query=True)
    assert pos.query_ids.tolist() == [0, 3, 7]
    assert counts["dropped_no_positive"] == 1 and counts["dropped_small_group"] == 0
    both, counts = filter_queries(ds, require_positive_query=True, min_group_size=2)
    assert both.query_ids.tolist() == [0, 3]
    assert (counts["dropped_small_group"], counts["dropped_no_positive"]) == (1, 1)
    rewards = np.where(ds.traj_mask, ds.acc, 0.0)  # only acc = 1.0 counts as a reward >= 1
    thr, counts = filter_queries(ds, require_positive_query=True, positive_threshold_rewards=rewards)
    assert thr.query_ids.tolist() == [0] and counts["dropped_no_positive"] == 3
    with pytest.raises(DataError, match="no train query is left"):
        filter_queries(ds, min_group_size=4)
    with pytest.raises(ConfigError):
        filter_queries(ds, require_positive_query=True, positive_threshold_rewards=np.zeros(3))


def test_loading_a_broken_file_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **with_item("traj", (3, 2, 1), 5))
    code = (
        "import sys; from leverjax.errors import exit_on_error; from leverjax.data import load_npz; "
        "exit_on_error(load_npz)(sys.argv[1])"
    )
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {bad}: traj[3, 2, 1] = 5 is outside the pool (K = 5)"
