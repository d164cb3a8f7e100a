"""The Lever-Plus importer on small JSON fixtures of both layouts: every count, every malformed input."""
import copy
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.data import load_npz
from leverjax.data.leverplus import convert_rl_data, load_embeddings, load_rl_json
from leverjax.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, D = 50, 6
EMB = np.random.default_rng(0).standard_normal((N, D)).astype(np.float32)


def cand(pointer, acc, **fields):
    out = {"pointer": pointer, "vqa_acc_score": acc, "vqa_correct": int(acc > 0), "vqa_gt_prob": 0.5,
           "vqa_rel_score": 0.4, "gen_method": "beam", "eval_failed": False, "vqa_eval_mode": "vqaEval"}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not ...}


def pool_layout() -> dict:
    """Five queries with candidate pools; query 1 is left empty by the filters."""
    return {
        "_meta": {"model": "Qwen2.5-VL-3B", "shot_num": 2},
        "3": {
            "query": {"query_id": 3},
            "candidate_pool_ids": [10, 11, 12, 13, 14],
            "pointer_candidates": [
                cand([0, 1], 1.0, pointer_global=[10, 11]),
                cand([2, 3], 0.0, vqa_eval_mode="fallback"),
                cand([1, 4], 0.6, eval_failed=True),
                cand([4, 0], 0.3, vqa_eval_mode="error"),
                cand([3, 2], 0.6, vqa_gt_prob=..., vqa_rel_score=..., vqa_correct=..., gen_method="sample"),
            ],
        },
        "7": {"candidate_pool_ids": [20, 21, 22, 23, 24, 25], "pointer_candidates": [
            cand([5, 0], 0.6, gen_method="random"), cand([1, 2], 0.3, vqa_gt_prob=None)]},
        "1": {"candidate_pool_ids": [30, 31, 32], "pointer_candidates": [cand([0, 1], 1.0, eval_failed=True)]},
        "12": {"query": {"query_id": "12"}, "candidate_pool_ids": [40, 41, 42, 43],
               "pointer_candidates": [cand([0, 1], 0.9)]},
        "9": {"candidate_pool_ids": [1, 2, 3], "pointer_candidates": [cand([2, 1], 0.0, gen_method="retrieval")]},
    }


def global_layout() -> dict:
    """Older files: global ids in `pointer`, no pool (the union of used ids, cut to pool_cap)."""
    return {
        "5": {"pointer_candidates": [cand([8, 2], 1.0), cand([2, 9], 0.0), cand([30, 8], 0.6)]},
        "6": {"pointer_candidates": [cand([1, 3], 0.3, vqa_correct=...)]},
        "2": {"pointer_candidates": [cand([4, 5], 0.0, vqa_eval_mode="fallback")]},
    }


def test_pool_layout_counts_and_arrays():
    ds, c = convert_rl_data(pool_layout(), EMB, source="rl.json")
    assert c == {
        "queries_in": 5, "queries_pool_layout": 5, "queries_global_layout": 0, "pools_cut": 0,
        "trajectories_in": 10, "dropped_eval_failed": 2, "dropped_eval_error": 1, "dropped_fallback": 1,
        "kept_fallback": 0, "dropped_outside_pool": 0, "queries_dropped_empty": 1, "queries_kept": 4,
        "trajectories_kept": 6, "train": 3, "val": 1, "test": 0, "missing_gt_prob": 2, "missing_rel": 1,
        "derived_correct": 1,
    }
    # sorted ids 1, 3, 7, 9, 12: the first 80% (4) are train, so 12 is val; 1 was dropped empty
    assert ds.query_ids.tolist() == [3, 7, 9, 12] and ds.split.tolist() == [0, 0, 0, 1]
    assert (ds.pool_size, ds.max_trajectories, ds.num_steps) == (6, 2, 2)
    assert ds.pool_ids[0].tolist() == [10, 11, 12, 13, 14, -1]
    assert ds.traj[0].tolist() == [[0, 1], [3, 2]] and ds.traj[2].tolist() == [[2, 1], [-1, -1]]
    assert ds.acc[0].tolist() == pytest.approx([1.0, 0.6]) and ds.correct[0].tolist() == [1.0, 1.0]
    assert np.isnan(ds.gt_prob[0, 1]) and np.isnan(ds.rel[0, 1]) and np.isnan(ds.gt_prob[1, 1])
    assert ds.gen_methods == ("beam", "random", "retrieval", "sample")
    assert [ds.gen_methods[g] for g in ds.gen_method[0]] == ["beam", "sample"]
    assert ds.meta["lever_plus_meta"] == {"model": "Qwen2.5-VL-3B", "shot_num": 2}
    assert ds.meta["import_counts"] == c and ds.meta["source"] == "lever-plus rl json"
    assert not ds.has_oracle and ds.emb.shape == (N, D)


def test_test_ratio_carves_test_out_of_val_and_keeps_train():
    data = pool_layout()
    for i in range(20, 30):  # 15 ids: 1, 3, 7, 9, 12, 20..29 → the first 12 train (1 is dropped empty), 27..29 val
        data[str(i)] = {"candidate_pool_ids": [1, 2, 3], "pointer_candidates": [cand([0, 1], 0.3)]}
    plain, _ = convert_rl_data(data, EMB)
    ds, c = convert_rl_data(data, EMB, test_ratio=0.1)  # ceil(1.5) = 2 → the last two ids are test
    assert plain.split.tolist()[-4:] == [0, 1, 1, 1]
    assert ds.query_ids.tolist() == plain.query_ids.tolist()
    assert (ds.split == 0).tolist() == (plain.split == 0).tolist()  # train is exactly the reference's
    assert ds.split.tolist()[-3:] == [1, 2, 2] and (c["train"], c["val"], c["test"]) == (11, 1, 2)
    assert ds.meta["importer"]["test_ratio"] == 0.1
    with pytest.raises(ConfigError, match="test_ratio = 0.3 must lie in"):
        convert_rl_data(data, EMB, test_ratio=0.3)


def test_keep_fallback_flag():
    ds, c = convert_rl_data(pool_layout(), EMB, keep_fallback=True)
    assert (c["dropped_fallback"], c["kept_fallback"], c["trajectories_kept"]) == (0, 1, 7)
    assert ds.traj[0].tolist() == [[0, 1], [2, 3], [3, 2]] and ds.acc[0, 1] == 0.0


def test_global_layout_pool_is_the_sorted_union_cut_to_the_cap():
    ds, c = convert_rl_data(global_layout(), EMB, pool_cap=3)
    assert (c["queries_global_layout"], c["pools_cut"], c["dropped_outside_pool"]) == (3, 1, 1)
    assert (c["dropped_fallback"], c["queries_dropped_empty"], c["derived_correct"]) == (1, 1, 1)
    assert (c["queries_kept"], c["trajectories_kept"], c["train"], c["val"]) == (2, 3, 1, 1)
    # ids 2, 5, 6: the first int(0.8 * 3) = 2 are train; query 2 was left empty
    assert ds.query_ids.tolist() == [5, 6] and ds.split.tolist() == [0, 1]
    assert ds.pool_ids.tolist() == [[2, 8, 9], [1, 3, -1]]
    assert ds.traj[0].tolist() == [[1, 0], [0, 2]] and ds.traj[1].tolist() == [[0, 1], [-1, -1]]
    assert ds.correct[1, 0] == 1.0                                   # derived from acc 0.3
    _, wide = convert_rl_data(global_layout(), EMB)
    assert (wide["pools_cut"], wide["dropped_outside_pool"], wide["trajectories_kept"]) == (0, 0, 4)


def test_mixed_layouts_and_string_ids():
    rl = {**global_layout(), **{k: v for k, v in pool_layout().items() if k in ("7", "9")}}
    ds, c = convert_rl_data(rl, EMB)
    assert (c["queries_pool_layout"], c["queries_global_layout"]) == (2, 3)
    assert ds.query_ids.tolist() == [5, 6, 7, 9]


def broken(mutate, layout=pool_layout):
    rl = copy.deepcopy(layout())
    mutate(rl)
    return rl


MALFORMED = [
    ("no pointer_candidates", lambda r: r["3"].pop("pointer_candidates"), "query '3': missing field 'pointer_candidates'"),
    ("no pointer", lambda r: r["7"]["pointer_candidates"][1].pop("pointer"), "query '7': pointer_candidates[1]: missing field 'pointer'"),
    ("pointer length", lambda r: r["12"]["pointer_candidates"][0].update(pointer=[0, 1, 2]), "query '12': pointer_candidates[0]: pointer has 3 entries but trajectories have S = 2"),
    ("pointer floats", lambda r: r["9"]["pointer_candidates"][0].update(pointer=[1.0, 2.0]), "query '9': pointer_candidates[0]: pointer must be a list of integers"),
    ("pointer repeats", lambda r: r["9"]["pointer_candidates"][0].update(pointer=[1, 1]), "query '9': pointer_candidates[0]: pointer = [1, 1] repeats an entry"),
    ("pool id beyond table", lambda r: r["7"]["candidate_pool_ids"].__setitem__(1, 99), "query '7': candidate_pool_ids[1] = 99 is beyond the embedding table (N = 50 rows)"),
    ("pointer outside pool", lambda r: r["3"]["pointer_candidates"][4].update(pointer=[3, 5]), "query '3': pointer_candidates[4]: pointer = [3, 5] is outside its pool of 5 candidates"),
    ("pointer_global", lambda r: r["3"]["pointer_candidates"][0].update(pointer_global=[10, 12]), "query '3': pointer_candidates[0]: pointer_global = [10, 12] disagrees with candidate_pool_ids"),
    ("query id beyond table", lambda r: r.update({"70": r.pop("7")}), "query '70': the query id is beyond the embedding table (N = 50 rows)"),
    ("key not an id", lambda r: r.update({"abc": r.pop("7")}), "query 'abc': the key is not an integer query id"),
    ("query_id disagrees", lambda r: r["12"]["query"].update(query_id=13), "query '12': query.query_id = 13 disagrees with the key"),
    ("acc missing", lambda r: r["12"]["pointer_candidates"][0].pop("vqa_acc_score"), "query '12': pointer_candidates[0]: missing field 'vqa_acc_score'"),
    ("acc in percent", lambda r: r["12"]["pointer_candidates"][0].update(vqa_acc_score=60), "query '12': pointer_candidates[0]: vqa_acc_score = 60 is outside [0, 1]"),
    ("acc a string", lambda r: r["12"]["pointer_candidates"][0].update(vqa_acc_score="0.6"), "query '12': pointer_candidates[0]: vqa_acc_score = \"0.6\" is not a number"),
    ("correct", lambda r: r["12"]["pointer_candidates"][0].update(vqa_correct=2), "query '12': pointer_candidates[0]: vqa_correct = 2 is not 0 or 1"),
    ("eval mode", lambda r: r["12"]["pointer_candidates"][0].update(vqa_eval_mode="exact"), "query '12': pointer_candidates[0]: vqa_eval_mode = \"exact\" is not one of vqaEval, fallback, error"),
    ("entry type", lambda r: r.update({"7": [1, 2]}), "query '7': the entry must be a JSON object"),
    ("duplicate id", lambda r: r.update({"07": r["7"]}), "query id 7 appears twice"),
]


@pytest.mark.parametrize("name,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_names_the_query(name, mutate, message):
    with pytest.raises(DataError) as e:
        convert_rl_data(broken(mutate), EMB, source="rl.json")
    assert str(e.value).startswith("rl.json: ") and message in str(e.value), str(e.value)


def test_global_id_beyond_table_and_empty_inputs():
    rl = broken(lambda r: r["6"]["pointer_candidates"][0].update(pointer=[1, 77]), global_layout)
    with pytest.raises(DataError, match="query '6': pointer_candidates\\[0\\]: pointer id 77 is beyond the embedding table"):
        convert_rl_data(rl, EMB)
    with pytest.raises(DataError, match="holds no query"):
        convert_rl_data({"_meta": {}}, EMB)
    only_failed = {"4": {"pointer_candidates": [cand([1, 2], 1.0, eval_failed=True)]}}
    with pytest.raises(DataError, match="no trajectory is left after filtering \\(eval_failed 1"):
        convert_rl_data(only_failed, EMB)


def test_input_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_rl_json(str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"3": {"pointer_candidates": [}')
    with pytest.raises(DataError, match="is not valid JSON \\(Expecting value at line 1"):
        load_rl_json(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="must hold a JSON object keyed by query id, got a JSON list"):
        load_rl_json(str(bad))
    npy = tmp_path / "emb.npy"
    np.save(npy, EMB.astype(np.float64))
    got = load_embeddings(str(npy))
    assert got.dtype == np.float32 and got.shape == (N, D)
    nan = EMB.copy()
    nan[4, 1] = np.nan
    np.save(npy, nan)
    with pytest.raises(DataError, match="emb\\[4, 1\\] = nan is not finite"):
        load_embeddings(str(npy))
    np.save(npy, EMB[0])
    with pytest.raises(DataError, match="must be a numeric 2-d array"):
        load_embeddings(str(npy))


def test_torch_embeddings_and_missing_torch(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pt = tmp_path / "emb.pt"
    torch.save(torch.from_numpy(EMB).to(torch.bfloat16), pt)
    got = load_embeddings(str(pt))
    np.testing.assert_allclose(got, EMB, rtol=1e-2, atol=1e-2)
    torch.save({"emb": torch.from_numpy(EMB)}, pt)
    with pytest.raises(DataError, match="holds a dict, but must hold a bare tensor"):
        load_embeddings(str(pt))
    monkeypatch.setitem(sys.modules, "torch", None)                   # as if not installed
    with pytest.raises(DataError, match="needs PyTorch, which is not installed; install it"):
        load_embeddings(str(pt))


def test_command_line(tmp_path):
    rl_path, emb_path, out = tmp_path / "rl.json", tmp_path / "emb.npy", tmp_path / "out.npz"
    rl_path.write_text(json.dumps(pool_layout()))
    np.save(emb_path, EMB)
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "leverjax.data.leverplus", f"--rl_json={rl_path}", f"--emb={emb_path}",
           f"--out={out}", "--encoder=clip-vit-b32"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "read 5 queries (5 with candidate pools, 0 with global pointers) and 10 trajectories" in res.stdout
    assert "eval_failed 2, eval mode error 1, fallback 1 (--keep_fallback keeps them)" in res.stdout
    assert "dropped queries left empty: 1" in res.stdout
    assert "kept 4 queries (train 3, val 1, test 0: run.py evaluates the final parameters on val) and 6 " \
           "trajectories" in res.stdout
    ds = load_npz(str(out))
    assert ds.meta["encoder"] == "clip-vit-b32" and ds.query_ids.tolist() == [3, 7, 9, 12]
    rl_path.write_text(json.dumps(broken(lambda r: r["12"]["pointer_candidates"][0].update(pointer=[0]))))
    bad = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"error: {rl_path}: query '12': pointer_candidates[0]: pointer has 1 entries")


# --------------------------------------------------------------------------------------------
# Export: a data set back to the original's RL JSON (what bench/bench_vs_original.py feeds it)
# --------------------------------------------------------------------------------------------


def small_synthetic():
    from leverjax.data.synth import make_synthetic

    return make_synthetic(num_examples=300, num_queries=30, num_test_queries=5, pool_size=12, dim=8,
                          latent_dim=4, num_clusters=3, max_trajectories=6, min_trajectories=3)


def test_export_round_trips_through_the_importer(tmp_path):
    from leverjax.data.leverplus import to_rl_data, write_rl_files

    ds = small_synthetic()
    sub = ds.subset(np.concatenate([ds.split_index("train"), ds.split_index("val")]))
    rl = write_rl_files(ds, str(tmp_path / "rl.json"), str(tmp_path / "emb.npy"))
    assert json.loads((tmp_path / "rl.json").read_text()) == json.loads(json.dumps(rl))
    assert rl == to_rl_data(sub)  # the test queries are left out
    back, counts = convert_rl_data(load_rl_json(str(tmp_path / "rl.json")), load_embeddings(str(tmp_path / "emb.npy")))
    assert counts["queries_kept"] == sub.num_queries and counts["dropped_outside_pool"] == 0
    assert np.array_equal(back.emb, ds.emb) and np.array_equal(back.query_ids, sub.query_ids)
    assert np.array_equal(back.split, sub.split)
    k, m = back.pool_size, back.max_trajectories
    assert np.array_equal(back.pool_ids, sub.pool_ids[:, :k]) and (sub.pool_ids[:, k:] < 0).all()
    assert np.array_equal(back.traj, sub.traj[:, :m]) and (sub.traj[:, m:] < 0).all()
    mask = back.traj_mask
    for f in ("acc", "correct", "gt_prob", "rel"):
        assert np.array_equal(getattr(back, f)[mask], getattr(sub, f)[:, :m][mask], equal_nan=True), f
    assert np.isnan(back.gt_prob[mask]).any()  # unknown values travel as null
    names = lambda d: np.asarray(d.gen_methods)[d.gen_method[:, :m][mask]]
    assert (names(back) == names(sub)).all()
    first = rl[str(int(sub.query_ids[0]))]["pointer_candidates"][0]
    assert first["pointer_global"] == [int(sub.pool_ids[0, p]) for p in first["pointer"]]


def test_export_refuses_a_split_the_original_cannot_rederive():
    from leverjax.data.leverplus import to_rl_data

    ds = small_synthetic()
    split = ds.split.copy()
    train = ds.split_index("train")
    split[train[0]] = 1  # the smallest train id becomes val: the original would train on it
    with pytest.raises(DataError, match=r"re-derives the split from the ids .* query \d+ \(rank 0 of 30 by id\)"):
        to_rl_data(dataclasses.replace(ds, split=split))
    with pytest.raises(DataError, match="no query in the splits test, val"):
        to_rl_data(ds.subset(train), splits=("test", "val"))


ORIGINAL = os.environ.get("LEVERPLUS_ORIGINAL", "")


@pytest.mark.skipif(not os.path.isfile(os.path.join(ORIGINAL, "lever_lm", "workflows", "grpo_post_train.py")),
                    reason="set LEVERPLUS_ORIGINAL to a checkout of github.com/yunsoft2019/Lever-Plus")
def test_export_is_read_by_the_original_loader(tmp_path):
    """The original's own RL dataset (behind the bench's import stubs) reads our files: same queries,
    pools and pointers."""
    pytest.importorskip("torch")
    import importlib.util

    from leverjax.data.leverplus import write_rl_files

    spec = importlib.util.spec_from_file_location("bench_vs_original", os.path.join(REPO, "bench", "bench_vs_original.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_stubs(str(tmp_path / "stubs"))
    ds = small_synthetic()
    write_rl_files(ds, str(tmp_path / "rl.json"), str(tmp_path / "emb.pt"))
    code = """if True:
        import json, sys, torch
        from lever_lm.models.v3 import RLBeamDatasetWithEmbedding, load_beam_data, split_beam_data
        data = load_beam_data(sys.argv[1]); emb = torch.load(sys.argv[2])
        out = {}
        for name, part in zip(("train", "val"), split_beam_data(data)):
            d = RLBeamDatasetWithEmbedding(part, emb, emb, [], shot_num=2)
            out[name] = {str(s["query_id"]): [d[i]["beam_labels"].tolist(), s["candidate_indices"]]
                         for i, s in enumerate(d.samples)}
        print("RESULT" + json.dumps(out))
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "stubs"), ORIGINAL]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "rl.json"), str(tmp_path / "emb.pt")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in ("train", "val"):
        rows = ds.split_index(name)
        assert sorted(got[name], key=int) == [str(int(q)) for q in sorted(ds.query_ids[rows])]
        for r in rows:
            labels, pool = got[name][str(int(ds.query_ids[r]))]
            assert pool == [int(g) for g in ds.pool_ids[r] if g >= 0]
            assert labels == ds.traj[r][ds.traj_mask[r]].tolist()
