"""Importer for the original Lever-Plus RL data: JSON + embedding table → schema-v1 .npz.

``python -m leverjax.data.leverplus --rl_json=RL.json --emb=EMB.pt --out=DATA.npz``

The RL JSON is a dict keyed by query id (a string holding an integer row of the embedding table)
plus an optional ``_meta`` key. Each entry has ``pointer_candidates`` (a list of trajectories) and
optionally ``query`` (with ``query_id``, which must agree with the key) and
``candidate_pool_ids``. Two layouts exist:

- **pool layout**: ``candidate_pool_ids`` lists the pool's global ids; a trajectory's ``pointer``
  holds pool positions and ``pointer_global`` (optional, checked when present) the global ids;
- **global layout** (older files): no pool; ``pointer`` holds global ids. The pool is the sorted
  union of the ids used by the query's trajectories, cut to the first ``pool_cap`` (64);
  trajectories that use an id beyond the cut are dropped and counted.

Per trajectory: ``vqa_acc_score`` (required, in [0, 1]), ``vqa_correct`` (0/1; derived as
acc > 0 when absent), ``vqa_gt_prob`` and ``vqa_rel_score`` (NaN when absent or null),
``gen_method`` ("unknown" when absent), ``eval_failed`` and ``vqa_eval_mode`` (vqaEval,
fallback or error). Like the reference, trajectories with ``eval_failed`` or eval mode ``error``
are dropped, ``fallback`` ones too unless ``keep_fallback``; queries left empty are dropped.
The split is the reference's: all query ids of the file sorted as integers, the first 80% train,
the rest val (computed before empty queries are dropped, as the reference does). ``test_ratio > 0``
carves a test split out of that val part: the last ``ceil(test_ratio · n)`` ids of the order become
test (at most the val part), and train stays exactly the reference's.

Embeddings: a ``torch.save``d float tensor [N, d] (needs PyTorch) or a ``.npy`` array.

**Export** (:func:`to_rl_data`, :func:`write_rl_files`) is the inverse: a schema-v1 data set back to
the original's RL JSON (pool layout: ``candidate_pool_ids``, ``pointer`` as pool positions and
``pointer_global``; ``vqa_eval_mode`` "vqaEval"; unknown gt_prob / rel as ``null``) and its embedding
table, which the original's ``lever_lm/workflows/grpo_post_train.py`` reads with ``--beam_data`` and
``--img_emb``. The original has no split field: it re-derives the split from the ids, so the
exported queries must be split the reference's way (checked). Importing an export gives back the
same queries, pools, trajectories and labels (``bench/bench_vs_original.py`` feeds both programs this
way).
"""
from __future__ import annotations

import datetime
import json
import os
import re
from typing import Any, Mapping

import numpy as np

import leverjax
from leverjax.data.npz import Dataset, dataset_from_arrays, save_npz
from leverjax.errors import ConfigError, DataError
from leverjax.fileio import atomic_path, dumps_strict, write_text_atomic

DEFAULT_POOL_CAP = 64
TRAIN_FRACTION = 0.8
EVAL_MODES = ("vqaEval", "fallback", "error")
_INT_KEY = re.compile(r"^\s*-?\d+\s*$")


# --------------------------------------------------------------------------------------------
# Reading the inputs
# --------------------------------------------------------------------------------------------


def load_rl_json(path: str) -> dict:
    """The RL JSON at ``path`` as a dict; a missing, unparsable or non-object file raises DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: is not UTF-8 text ({e.reason})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: must hold a JSON object keyed by query id, got a JSON {type(data).__name__}")
    return data


def load_embeddings(path: str) -> np.ndarray:
    """The embedding table [N, d] as float32 from a ``.npy`` file or a ``torch.save``d tensor.

    Reading a torch file needs PyTorch; without it the error says how to install it or convert the
    file. The table must be 2-d, numeric and finite.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if path.endswith(".npy"):
        try:
            table = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: is not a readable .npy array ({str(e).splitlines()[0]})") from None
    else:
        try:
            import torch
        except ImportError:
            raise DataError(
                f"{path}: reading a torch.save'd embedding table needs PyTorch, which is not "
                f"installed; install it (pip install torch, the CPU build is enough) or convert the "
                f"table to .npy with np.save(path, torch.load(file).float().numpy())"
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad file
            raise DataError(f"{path}: cannot be read by torch.load ({str(e).splitlines()[0]})") from None
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"{path}: holds a {type(obj).__name__}, but must hold a bare tensor [N, d]")
        table = obj.detach().to("cpu").float().numpy()
    if table.dtype.kind not in "fiu" or table.ndim != 2:
        raise DataError(
            f"{path}: the embedding table must be a numeric 2-d array [N, d], got dtype "
            f"{table.dtype} with shape {tuple(table.shape)}"
        )
    table = table.astype(np.float32, copy=False)
    if not np.isfinite(table).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(table))[0])
        raise DataError(f"{path}: emb[{bad[0]}, {bad[1]}] = {table[bad]} is not finite")
    return table


# --------------------------------------------------------------------------------------------
# Conversion (pure: dict + array in, Dataset + counts out)
# --------------------------------------------------------------------------------------------


def _query_id(key: str, entry: Any, n: int, where: str) -> int:
    """The embedding row of query ``key``, checked against ``query.query_id`` and the table size."""
    if not _INT_KEY.match(str(key)):
        raise DataError(f"{where}: the key is not an integer query id")
    qid = int(key)
    if not isinstance(entry, dict):
        raise DataError(f"{where}: the entry must be a JSON object, got a JSON {type(entry).__name__}")
    query = entry.get("query")
    if isinstance(query, dict) and "query_id" in query:
        inner = query["query_id"]
        if not _INT_KEY.match(str(inner)) or int(inner) != qid:
            raise DataError(f"{where}: query.query_id = {inner!r} disagrees with the key")
    if not 0 <= qid < n:
        raise DataError(f"{where}: the query id is beyond the embedding table (N = {n} rows)")
    return qid


def _int_list(value: Any, what: str, where: str) -> list[int]:
    """``value`` checked to be a list of integers (JSON numbers without a fraction)."""
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise DataError(f"{where}: {what} must be a list of integers, got {json.dumps(value)[:60]}")
    return value


def _number(value: Any, what: str, where: str) -> float:
    """``value`` as a float: a JSON number (or a boolean); NaN for null."""
    if value is None:
        return float("nan")
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)):
        raise DataError(f"{where}: {what} = {json.dumps(value)[:40]} is not a number")
    return float(value)


def _eval_outcome(cand: Mapping, keep_fallback: bool, where: str) -> str:
    """'keep', 'fallback_kept' or the reason the trajectory is dropped."""
    if cand.get("eval_failed"):
        return "eval_failed"
    mode = cand.get("vqa_eval_mode", "vqaEval")
    if mode is None:
        mode = "vqaEval"
    if mode not in EVAL_MODES:
        raise DataError(f"{where}: vqa_eval_mode = {json.dumps(mode)} is not one of {', '.join(EVAL_MODES)}")
    if mode == "error":
        return "eval_error"
    if mode == "fallback":
        return "fallback_kept" if keep_fallback else "fallback"
    return "keep"


def _pointer(cand: Mapping, where: str) -> list[int]:
    if "pointer" in cand:
        return _int_list(cand["pointer"], "pointer", where)
    if "pointer_pos" in cand:  # a field name used by some versions of the original
        return _int_list(cand["pointer_pos"], "pointer_pos", where)
    raise DataError(f"{where}: missing field 'pointer'")


def convert_rl_data(
    rl: Mapping[str, Any],
    emb: np.ndarray,
    *,
    keep_fallback: bool = False,
    pool_cap: int = DEFAULT_POOL_CAP,
    train_fraction: float = TRAIN_FRACTION,
    test_ratio: float = 0.0,
    source: str = "RL data",
    meta: Mapping[str, Any] | None = None,
) -> tuple[Dataset, dict[str, int]]:
    """The schema-v1 :class:`Dataset` of the RL data ``rl`` over the table ``emb``, and counts of
    what was read, kept and dropped and why (module docstring for the rules).

    Malformed input raises :class:`DataError` naming ``source``, the query id and the field.
    """
    if pool_cap < 1:
        raise ConfigError(f"pool_cap = {pool_cap} must be >= 1")
    if not 0.0 <= test_ratio <= 1.0 - train_fraction:
        raise ConfigError(f"test_ratio = {test_ratio} must lie in [0, {1.0 - train_fraction:g}]: the test split is "
                          f"carved out of the reference's val part (the last {1.0 - train_fraction:.0%} of the ids)")
    if not 0.0 < train_fraction <= 1.0:
        raise ConfigError(f"train_fraction = {train_fraction} must be in (0, 1]")
    n = emb.shape[0]
    counts = dict.fromkeys([
        "queries_in", "queries_pool_layout", "queries_global_layout", "pools_cut", "trajectories_in",
        "dropped_eval_failed", "dropped_eval_error", "dropped_fallback", "kept_fallback",
        "dropped_outside_pool", "queries_dropped_empty", "queries_kept", "trajectories_kept",
        "train", "val", "missing_gt_prob", "missing_rel", "derived_correct",
    ], 0)
    steps: int | None = None
    has_records = False  # any beam_rank or temperature
    first_where = ""
    queries: list[dict] = []
    for key, entry in rl.items():
        if key == "_meta":
            continue
        where = f"{source}: query '{key}'"
        qid = _query_id(key, entry, n, where)
        cands = entry.get("pointer_candidates")
        if cands is None:
            raise DataError(f"{where}: missing field 'pointer_candidates'")
        if not isinstance(cands, list):
            raise DataError(f"{where}: pointer_candidates must be a list of trajectories")
        counts["queries_in"] += 1
        counts["trajectories_in"] += len(cands)

        pointers = []
        for t, cand in enumerate(cands):
            w = f"{where}: pointer_candidates[{t}]"
            if not isinstance(cand, dict):
                raise DataError(f"{w} must be a JSON object")
            p = _pointer(cand, w)
            if steps is None:
                steps, first_where = len(p), w
                if steps == 0:
                    raise DataError(f"{w}: pointer is empty")
            elif len(p) != steps:
                raise DataError(
                    f"{w}: pointer has {len(p)} entries but trajectories have S = {steps} "
                    f"(from {first_where.split(': ', 1)[1]})"
                )
            if len(set(p)) != len(p):
                raise DataError(f"{w}: pointer = {p} repeats an entry")
            pointers.append(p)

        if "candidate_pool_ids" in entry:
            counts["queries_pool_layout"] += 1
            pool = _int_list(entry["candidate_pool_ids"], "candidate_pool_ids", where)
            for i, g in enumerate(pool):
                if not 0 <= g < n:
                    raise DataError(f"{where}: candidate_pool_ids[{i}] = {g} is beyond the embedding table (N = {n} rows)")
            positions = []
            for t, (cand, p) in enumerate(zip(cands, pointers)):
                w = f"{where}: pointer_candidates[{t}]"
                if any(not 0 <= x < len(pool) for x in p):
                    raise DataError(f"{w}: pointer = {p} is outside its pool of {len(pool)} candidates")
                if cand.get("pointer_global") is not None:
                    glob = _int_list(cand["pointer_global"], "pointer_global", w)
                    if glob != [pool[x] for x in p]:
                        raise DataError(
                            f"{w}: pointer_global = {glob} disagrees with candidate_pool_ids at "
                            f"pointer {p} ({[pool[x] for x in p]})"
                        )
                positions.append(p)
        else:
            counts["queries_global_layout"] += 1
            for t, p in enumerate(pointers):
                bad = [g for g in p if not 0 <= g < n]
                if bad:
                    raise DataError(
                        f"{where}: pointer_candidates[{t}]: pointer id {bad[0]} is beyond the "
                        f"embedding table (N = {n} rows)"
                    )
            used = sorted({g for p in pointers for g in p})
            if len(used) > pool_cap:
                counts["pools_cut"] += 1
            pool = used[:pool_cap]
            index = {g: i for i, g in enumerate(pool)}
            positions = [[index[g] for g in p] if all(g in index for g in p) else None for p in pointers]

        kept = []
        for t, (cand, pos) in enumerate(zip(cands, positions)):
            w = f"{where}: pointer_candidates[{t}]"
            outcome = _eval_outcome(cand, keep_fallback, w)
            if outcome in ("eval_failed", "eval_error", "fallback"):
                counts[f"dropped_{outcome}"] += 1
                continue
            if pos is None:
                counts["dropped_outside_pool"] += 1
                continue
            if "vqa_acc_score" not in cand:
                raise DataError(f"{w}: missing field 'vqa_acc_score'")
            acc = _number(cand["vqa_acc_score"], "vqa_acc_score", w)
            if not 0.0 <= acc <= 1.0:
                raise DataError(f"{w}: vqa_acc_score = {acc:g} is outside [0, 1]")
            if cand.get("vqa_correct") is None:
                correct = float(acc > 0)
                counts["derived_correct"] += 1
            else:
                correct = _number(cand["vqa_correct"], "vqa_correct", w)
                if correct not in (0.0, 1.0):
                    raise DataError(f"{w}: vqa_correct = {correct:g} is not 0 or 1")
            gt = _number(cand.get("vqa_gt_prob"), "vqa_gt_prob", w)
            rel = _number(cand.get("vqa_rel_score"), "vqa_rel_score", w)
            if np.isinf(gt) or np.isinf(rel):
                raise DataError(f"{w}: vqa_gt_prob / vqa_rel_score must be finite")
            counts["missing_gt_prob"] += int(np.isnan(gt))
            counts["missing_rel"] += int(np.isnan(rel))
            counts["kept_fallback"] += int(outcome == "fallback_kept")
            method = cand.get("gen_method")
            rank = cand.get("beam_rank")
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
                raise DataError(f"{w}: beam_rank = {rank!r} is not a rank (an integer >= 0, or null)")
            tau = _number(cand.get("temperature"), "temperature", w)
            if not (np.isnan(tau) or (np.isfinite(tau) and tau > 0)):
                raise DataError(f"{w}: temperature = {tau:g} is not a positive temperature (or null)")
            has_records |= rank is not None or not np.isnan(tau)
            kept.append((pos, acc, correct, gt, rel, "unknown" if method is None else str(method),
                         -1 if rank is None else rank, tau))
        queries.append({"id": qid, "pool": pool, "kept": kept})

    if not queries:
        raise DataError(f"{source}: holds no query (only keys other than _meta count)")
    if steps is None:
        raise DataError(f"{source}: holds no trajectory at all")

    # the reference's split over all query ids of the file, then drop empty queries
    order = sorted(range(len(queries)), key=lambda i: queries[i]["id"])
    n_train = int(len(queries) * train_fraction)
    n_test = min(int(np.ceil(test_ratio * len(queries) - 1e-9)), len(queries) - n_train)
    split_of = {i: (0 if rank < n_train else 2 if rank >= len(queries) - n_test else 1)
                for rank, i in enumerate(order)}
    ids_seen: dict[int, int] = {}
    for i in order:
        if queries[i]["id"] in ids_seen:
            raise DataError(f"{source}: query id {queries[i]['id']} appears twice (as different keys)")
        ids_seen[queries[i]["id"]] = i
    keep = [i for i in order if queries[i]["kept"]]
    counts["queries_dropped_empty"] = len(queries) - len(keep)
    counts["queries_kept"] = len(keep)
    if not keep:
        raise DataError(f"{source}: no trajectory is left after filtering ({_drop_text(counts)})")

    methods = sorted({c[5] for i in keep for c in queries[i]["kept"]})
    code = {m: c for c, m in enumerate(methods)}
    q = len(keep)
    k = max(len(queries[i]["pool"]) for i in keep)
    m = max(len(queries[i]["kept"]) for i in keep)
    pool_ids = np.full((q, k), -1, np.int64)
    traj = np.full((q, m, steps), -1, np.int64)
    acc = np.zeros((q, m), np.float32)
    correct = np.zeros((q, m), np.float32)
    gt_prob = np.full((q, m), np.nan, np.float32)
    rel = np.full((q, m), np.nan, np.float32)
    gen = np.full((q, m), -1, np.int8)
    gen_rank = np.full((q, m), -1, np.int64)
    gen_temperature = np.full((q, m), np.nan, np.float32)
    split = np.array([split_of[i] for i in keep], np.int8)
    for row, i in enumerate(keep):
        pool = queries[i]["pool"]
        pool_ids[row, : len(pool)] = pool
        for t, (pos, a, c, g, r, meth, rank, tau) in enumerate(queries[i]["kept"]):
            traj[row, t] = pos
            acc[row, t], correct[row, t], gt_prob[row, t], rel[row, t] = a, c, g, r
            gen[row, t] = code[meth]
            gen_rank[row, t], gen_temperature[row, t] = rank, tau
    counts["trajectories_kept"] = int((traj[..., 0] >= 0).sum())
    counts["train"] = int((split == 0).sum())
    counts["val"] = int((split == 1).sum())
    counts["test"] = int((split == 2).sum())
    if counts["train"] == 0:
        raise DataError(
            f"{source}: no train query is left ({len(queries)} queries, the first "
            f"{n_train} by id are train, and those were all dropped as empty)"
        )

    full_meta = {
        "source": "lever-plus rl json",
        "encoder": "unknown",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": leverjax.__version__,
        "importer": {"keep_fallback": keep_fallback, "pool_cap": pool_cap, "train_fraction": train_fraction,
                     "test_ratio": test_ratio},
        "import_counts": counts,
        "lever_plus_meta": rl.get("_meta"),
    }
    full_meta.update(meta or {})
    arrays = {
        "schema_version": np.asarray(1),
        "emb": emb,
        "query_ids": np.array([queries[i]["id"] for i in keep], np.int64),
        "pool_ids": pool_ids,
        "traj": traj,
        "acc": acc,
        "correct": correct,
        "gt_prob": gt_prob,
        "rel": rel,
        "gen_method": gen,
        "gen_methods": np.array(methods, dtype=str),
        "split": split,
        "meta": np.asarray(dumps_strict(full_meta, default=str)),
    }
    if has_records:  # the file records beam ranks or temperatures: keep them (schema's optional keys)
        arrays["gen_rank"], arrays["gen_temperature"] = gen_rank, gen_temperature
    return dataset_from_arrays(arrays, source=source), counts


def _drop_text(c: Mapping[str, int]) -> str:
    return (
        f"eval_failed {c['dropped_eval_failed']}, eval mode error {c['dropped_eval_error']}, "
        f"fallback {c['dropped_fallback']}, outside the pool {c['dropped_outside_pool']}"
    )


def report(counts: Mapping[str, int], ds: Dataset, *, keep_fallback: bool, pool_cap: int) -> str:
    """Lines for the terminal: what was read, what was kept and dropped and why."""
    fallback = (
        f"fallback kept {counts['kept_fallback']}" if keep_fallback
        else f"fallback {counts['dropped_fallback']} (--keep_fallback keeps them)"
    )
    return "\n".join([
        f"read {counts['queries_in']} queries ({counts['queries_pool_layout']} with candidate pools, "
        f"{counts['queries_global_layout']} with global pointers) and {counts['trajectories_in']} trajectories",
        f"dropped trajectories: eval_failed {counts['dropped_eval_failed']}, eval mode error "
        f"{counts['dropped_eval_error']}, {fallback}, outside the first {pool_cap} pool ids "
        f"{counts['dropped_outside_pool']} (pools cut: {counts['pools_cut']})",
        f"dropped queries left empty: {counts['queries_dropped_empty']}",
        f"kept {counts['queries_kept']} queries (train {counts['train']}, val {counts['val']}, test "
        f"{counts.get('test', 0)}{'' if counts.get('test') else ': run.py evaluates the final parameters on val'}) and "
        f"{counts['trajectories_kept']} trajectories; K = {ds.pool_size}, M = {ds.max_trajectories}, "
        f"S = {ds.num_steps}, emb {ds.num_examples} x {ds.dim}; methods {', '.join(ds.gen_methods)}",
        f"unknown values: vqa_gt_prob {counts['missing_gt_prob']}, vqa_rel_score "
        f"{counts['missing_rel']} (stored as NaN); vqa_correct derived from acc: {counts['derived_correct']}",
    ])


# --------------------------------------------------------------------------------------------
# Export (Dataset → the original's RL JSON + embedding table)
# --------------------------------------------------------------------------------------------


def _json_number(x: float) -> float | None:
    """A float32 label as a JSON number (exact when read back as float32), NaN as null."""
    return None if np.isnan(x) else float(x)


def to_rl_data(ds: Dataset, *, splits: tuple[str, ...] = ("train", "val"),
               train_fraction: float = TRAIN_FRACTION, labels: bool = True) -> dict:
    """The RL JSON dict (keyed by query id, plus ``_meta``) of the queries of ``splits`` in ``ds``.

    The original splits by sorted id (the first ``train_fraction`` train, the rest val), so the
    train queries of ``ds`` must be exactly the first ones by id among those exported, else
    :class:`DataError` says so (an exported test query becomes a val query there).
    ``labels=False`` writes the candidates without their ``vqa_*`` labels (and without that check): the
    input of the original's labeller, whose output :class:`RLJsonLabels` reads back.
    """
    rows = np.concatenate([ds.split_index(name) for name in splits]) if splits else np.zeros(0, np.int64)
    if rows.size == 0:
        raise DataError(f"the data set has no query in the splits {', '.join(splits) or '(none)'}")
    rows = rows[np.argsort(ds.query_ids[rows], kind="stable")]
    ids = ds.query_ids[rows]
    if np.unique(ids).size != ids.size:
        dup = int(ids[np.flatnonzero(np.diff(ids) == 0)[0]])
        raise DataError(f"query id {dup} appears twice among the exported queries; the RL JSON is keyed by id")
    n_train = int(len(rows) * train_fraction)
    want_train = np.arange(len(rows)) < n_train
    is_train = ds.split[rows] == 0
    if labels and not np.array_equal(want_train, is_train):
        bad = int(np.flatnonzero(want_train != is_train)[0])
        raise DataError(
            f"the original re-derives the split from the ids (the first {train_fraction:.0%} by id are train), "
            f"but query {int(ids[bad])} (rank {bad} of {len(rows)} by id) is "
            f"{'train' if is_train[bad] else 'not train'} here; export splits that follow that rule")
    rl: dict[str, Any] = {"_meta": {
        "source": "leverjax export", "tool_version": leverjax.__version__, "splits": list(splits),
        "num_queries": int(len(rows)), "num_steps": ds.num_steps, "data_meta_source": ds.meta.get("source"),
    }}
    for r in rows:
        qid = int(ds.query_ids[r])
        pool = [int(g) for g in ds.pool_ids[r] if g >= 0]
        cands = []
        for t in np.flatnonzero(ds.traj_mask[r]):
            pos = [int(p) for p in ds.traj[r, t]]
            m = int(ds.gen_method[r, t])
            cand = {"pointer": pos, "pointer_global": [pool[p] for p in pos],
                    "gen_method": ds.gen_methods[m] if m >= 0 else "unknown"}
            if ds.gen_rank is not None:
                cand["beam_rank"] = int(ds.gen_rank[r, t]) if ds.gen_rank[r, t] >= 0 else None
            if ds.gen_temperature is not None:
                cand["temperature"] = _json_number(ds.gen_temperature[r, t])
            if labels:
                cand.update({
                    "vqa_acc_score": float(ds.acc[r, t]),
                    "vqa_correct": int(ds.correct[r, t] > 0.5),
                    "vqa_gt_prob": _json_number(ds.gt_prob[r, t]),
                    "vqa_rel_score": _json_number(ds.rel[r, t]),
                    "vqa_eval_mode": "vqaEval",
                    "eval_failed": False,
                })
            cands.append(cand)
        rl[str(qid)] = {"query": {"query_id": qid}, "candidate_pool_ids": pool, "pointer_candidates": cands}
    return rl


class RLJsonLabels:
    """A scorer that reads labels from the original's RL JSON (its labeller's output for candidates written with
    ``to_rl_data(..., labels=False)``): a prompt (query row, demonstration rows) is found by its query id and
    ``pointer_global``. A prompt the file lacks, or one its labeller marked failed, is an error naming it."""

    def __init__(self, path: str):
        rl = load_rl_json(path)
        self.path = path
        self.identity = {"scorer": "rl-json", "file": os.path.abspath(path)}
        self.entries: dict[tuple, tuple[dict, str]] = {}
        for key, entry in rl.items():
            if key == "_meta":
                continue
            if not _INT_KEY.match(str(key)) or not isinstance(entry, dict):
                raise DataError(f"{path}: key {key!r} is not a query id with an object")
            for j, cand in enumerate(entry.get("pointer_candidates") or []):
                w = f"{path}: query '{key}', candidate {j}"
                if not isinstance(cand, dict) or "pointer_global" not in cand:
                    raise DataError(f"{w}: has no pointer_global (the demonstrations' rows)")
                self.entries[(int(key), tuple(_int_list(cand["pointer_global"], "pointer_global", w)))] = (cand, w)

    def score(self, query_rows, demo_rows) -> dict[str, np.ndarray]:
        q, d = np.asarray(query_rows), np.asarray(demo_rows)
        out = {k: np.full(len(q), np.nan, np.float32) for k in ("acc", "correct", "gt_prob", "rel")}
        for i, (qid, demos) in enumerate(zip(q.tolist(), d.tolist())):
            found = self.entries.get((int(qid), tuple(demos)))
            if found is None:
                raise DataError(f"{self.path}: query {qid} has no candidate with pointer_global {demos}: it is not "
                                "the labelled file of these candidates (same checkpoint, data, mix and seed?)")
            cand, w = found
            outcome = _eval_outcome(cand, False, w)
            if outcome != "keep":
                raise DataError(f"{w}: the labeller gave no usable label ({outcome.replace('_', ' ')}); relabel it")
            if "vqa_acc_score" not in cand:
                raise DataError(f"{w}: missing field 'vqa_acc_score' (the candidate is not labelled)")
            acc = _number(cand["vqa_acc_score"], "vqa_acc_score", w)
            if not 0.0 <= acc <= 1.0:
                raise DataError(f"{w}: vqa_acc_score = {acc:g} is outside [0, 1]")
            correct = float(acc > 0) if cand.get("vqa_correct") is None else _number(cand["vqa_correct"],
                                                                                     "vqa_correct", w)
            out["acc"][i], out["correct"][i] = acc, correct
            out["gt_prob"][i] = _number(cand.get("vqa_gt_prob"), "vqa_gt_prob", w)
            out["rel"][i] = _number(cand.get("vqa_rel_score"), "vqa_rel_score", w)
        return out


def write_rl_files(ds: Dataset, json_path: str, emb_path: str, *,
                   splits: tuple[str, ...] = ("train", "val")) -> dict:
    """Writes :func:`to_rl_data` to ``json_path`` and the embedding table to ``emb_path``: a
    ``torch.save``d float32 tensor (what the original's ``--img_emb`` loads; needs PyTorch) unless
    the name ends in ``.npy``. Returns the RL dict."""
    rl = to_rl_data(ds, splits=splits)
    write_text_atomic(json_path, dumps_strict(rl))
    emb = np.ascontiguousarray(ds.emb, np.float32)
    if emb_path.endswith(".npy"):
        with atomic_path(emb_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, emb, allow_pickle=False)
    else:
        try:
            import torch
        except ImportError:
            raise DataError(f"{emb_path}: writing a torch.save'd table needs PyTorch (pip install torch, the CPU "
                            f"build is enough); or give a .npy path") from None
        with atomic_path(emb_path) as tmp:
            torch.save(torch.from_numpy(emb.copy()), tmp)
    return rl


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cli() -> None:
    from absl import flags

    from leverjax import command as command_lib

    flags.DEFINE_string("rl_json", None, "The original's RL data JSON.", required=True)
    flags.DEFINE_string("emb", None, "Embedding table: torch.save'd tensor [N, d] or .npy.", required=True)
    flags.DEFINE_string("out", None, "Output .npz path.", required=True)
    flags.DEFINE_bool("keep_fallback", False, "Keep trajectories whose VQA eval mode is 'fallback'.")
    flags.DEFINE_integer("pool_cap", DEFAULT_POOL_CAP, "Pool size for files without candidate pools.")
    flags.DEFINE_string("encoder", "unknown", "Encoder that made the embeddings, recorded in meta.")
    flags.DEFINE_float("test_ratio", 0.0, "Share of all query ids (the last ones by id, taken from the reference's "
                       "val part) that form a test split; 0 keeps the reference's train/val split only.")
    FLAGS = flags.FLAGS

    def main(argv: list[str]) -> None:
        rl = load_rl_json(FLAGS.rl_json)
        emb = load_embeddings(FLAGS.emb)
        ds, counts = convert_rl_data(
            rl, emb, keep_fallback=FLAGS.keep_fallback, pool_cap=FLAGS.pool_cap, test_ratio=FLAGS.test_ratio,
            source=FLAGS.rl_json,
            meta={"encoder": FLAGS.encoder, "rl_json": os.path.abspath(FLAGS.rl_json),
                  "embeddings": os.path.abspath(FLAGS.emb)},
        )
        save_npz(ds, FLAGS.out)
        print(report(counts, ds, keep_fallback=FLAGS.keep_fallback, pool_cap=FLAGS.pool_cap))
        print(f"wrote {FLAGS.out} ({os.path.getsize(FLAGS.out) / 2**20:.1f} MiB)")

    command_lib.run(main, command='python -m leverjax.data.leverplus',
                    about="Converts the original's RL data (JSON + embedding table) to a schema-v1 .npz.")


if __name__ == "__main__":
    _cli()
