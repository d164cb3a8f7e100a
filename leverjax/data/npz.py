"""The schema-v1 .npz data format: validation, loading, saving and query filters.

A data file holds one embedding table and, per query, a candidate pool and a group of labelled
trajectories (see the README's "Data format" section). :func:`load_npz` checks every rule of the
schema and returns a :class:`Dataset` of host numpy arrays; a file that breaks a rule raises
:class:`~leverjax.errors.DataError` with one sentence naming the key, the rule and an example
offending index. Nothing is ever repaired silently.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from typing import Any, Mapping

import numpy as np

from leverjax.errors import ConfigError, DataError
from leverjax.fileio import atomic_path, dumps_strict

SCHEMA_VERSION = 1
ORACLE_PREFIX = "oracle_"
SPLITS = {0: "train", 1: "val", 2: "test"}
REQUIRED_KEYS = (
    "schema_version", "emb", "query_ids", "pool_ids", "traj", "acc", "correct",
    "gt_prob", "rel", "gen_method", "gen_methods", "split", "meta",
)
_LABEL_KEYS = ("acc", "correct", "gt_prob", "rel")


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A validated data set: host numpy arrays in the shapes and dtypes of schema v1.

    Padding is −1 in ``pool_ids``, ``traj`` and ``gen_method``; padded label entries carry no
    meaning. ``oracle`` holds the ``oracle_*`` arrays of synthetic data under their names without
    the prefix, and is empty for real exports.
    """

    emb: np.ndarray
    query_ids: np.ndarray
    pool_ids: np.ndarray
    traj: np.ndarray
    acc: np.ndarray
    correct: np.ndarray
    gt_prob: np.ndarray
    rel: np.ndarray
    gen_method: np.ndarray
    gen_methods: tuple[str, ...]
    split: np.ndarray
    meta: dict
    oracle: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        """Q, the number of queries."""
        return int(self.query_ids.shape[0])

    @property
    def pool_size(self) -> int:
        """K, the padded pool size."""
        return int(self.pool_ids.shape[1])

    @property
    def max_trajectories(self) -> int:
        """M, the padded number of trajectories per query."""
        return int(self.traj.shape[1])

    @property
    def num_steps(self) -> int:
        """S, the number of selection steps (demonstrations) per trajectory."""
        return int(self.traj.shape[2])

    @property
    def num_examples(self) -> int:
        """N, the number of rows of the embedding table."""
        return int(self.emb.shape[0])

    @property
    def dim(self) -> int:
        """d, the embedding width."""
        return int(self.emb.shape[1])

    @property
    def pool_mask(self) -> np.ndarray:
        """bool [Q, K]: which pool slots hold a real candidate."""
        return self.pool_ids >= 0

    @property
    def traj_mask(self) -> np.ndarray:
        """bool [Q, M]: which trajectory slots hold a real trajectory."""
        return self.traj[..., 0] >= 0

    @property
    def group_sizes(self) -> np.ndarray:
        """int [Q]: number of labelled trajectories per query (M_q)."""
        return self.traj_mask.sum(axis=1)

    @property
    def has_oracle(self) -> bool:
        """Whether the data carries a ground truth (synthetic data)."""
        return bool(self.oracle)

    def split_index(self, name: str) -> np.ndarray:
        """Row indices (into the Q axis) of the queries of split ``name`` (train, val or test)."""
        codes = {v: k for k, v in SPLITS.items()}
        if name not in codes:
            raise ConfigError(f"unknown split '{name}'; valid splits are train, val, test")
        return np.flatnonzero(self.split == codes[name])

    def subset(self, query_index: np.ndarray) -> "Dataset":
        """The data set restricted to the queries ``query_index`` (rows of the Q axis, in order).

        The embedding table, ``gen_methods``, ``meta`` and ``oracle`` are shared unchanged.
        """
        idx = np.asarray(query_index)
        return dataclasses.replace(
            self,
            query_ids=self.query_ids[idx],
            pool_ids=self.pool_ids[idx],
            traj=self.traj[idx],
            acc=self.acc[idx],
            correct=self.correct[idx],
            gt_prob=self.gt_prob[idx],
            rel=self.rel[idx],
            gen_method=self.gen_method[idx],
            split=self.split[idx],
        )

    def summary(self) -> dict[str, Any]:
        """Sizes and label statistics, for printing: counts per split, positive ratio, groups."""
        mask = self.traj_mask
        correct = (self.correct > 0.5) & mask
        sizes = mask.sum(axis=1)
        has = sizes > 0
        n_pos = correct.sum(axis=1)
        return {
            "queries": self.num_queries,
            "train": int((self.split == 0).sum()),
            "val": int((self.split == 1).sum()),
            "test": int((self.split == 2).sum()),
            "examples": self.num_examples,
            "dim": self.dim,
            "pool_size": self.pool_size,
            "max_trajectories": self.max_trajectories,
            "steps": self.num_steps,
            "trajectories": int(mask.sum()),
            "positive_ratio": float(correct.sum() / max(int(mask.sum()), 1)),
            "all_negative_groups": int((has & (n_pos == 0)).sum()),
            "all_positive_groups": int((has & (n_pos == sizes)).sum()),
        }


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _fmt_index(index: tuple) -> str:
    """'[12, 3, 1]' for an index tuple."""
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def _first(mask: np.ndarray) -> tuple:
    """The index of the first True entry of ``mask`` (in C order)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _fmt_value(value: Any) -> str:
    """A short rendering of a scalar or small array value for an error message."""
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(_fmt_value(v) for v in value.tolist()) + "]"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def _reject(bad: np.ndarray, source: str, key: str, a: np.ndarray, why: str) -> None:
    """Raises :class:`DataError` at the first entry of ``a`` where ``bad`` holds: its index, value and ``why``."""
    if bad.any():
        i = _first(bad)
        raise DataError(f"{source}: {key}{_fmt_index(i)} = {_fmt_value(a[i])} {why}")


def _check_rank(key: str, a: np.ndarray, ndim: int, shape_doc: str, source: str) -> None:
    if a.ndim != ndim:
        raise DataError(
            f"{source}: {key} has rank {a.ndim} (shape {tuple(a.shape)}) but must have rank "
            f"{ndim}, shaped {shape_doc}"
        )


def _int_array(
    arrays: Mapping[str, np.ndarray], key: str, ndim: int, shape_doc: str, dtype: type,
    source: str,
) -> np.ndarray:
    """``arrays[key]`` checked to hold integers of rank ``ndim`` and cast to ``dtype`` if they fit."""
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "iu":
        raise DataError(
            f"{source}: {key} has dtype {a.dtype} but must hold integers "
            f"({np.dtype(dtype).name}); id and index arrays may not be floats or other types"
        )
    _check_rank(key, a, ndim, shape_doc, source)
    info = np.iinfo(dtype)
    _reject((a < info.min) | (a > info.max), source, key, a, f"does not fit {np.dtype(dtype).name}")
    return a.astype(dtype, copy=False)


def _float_array(
    arrays: Mapping[str, np.ndarray], key: str, ndim: int, shape_doc: str, source: str,
    kinds: str = "f",
) -> np.ndarray:
    """``arrays[key]`` checked to be numeric of kind ``kinds`` and rank ``ndim``, as float32."""
    a = np.asarray(arrays[key])
    if a.dtype.kind not in kinds:
        want = "floats" if kinds == "f" else "numbers"
        raise DataError(
            f"{source}: {key} has dtype {a.dtype} but must hold {want} (float32)"
        )
    _check_rank(key, a, ndim, shape_doc, source)
    return a.astype(np.float32, copy=False)


def _str_value(arrays: Mapping[str, np.ndarray], key: str, ndim: int, source: str) -> np.ndarray:
    a = np.asarray(arrays[key])
    if a.dtype.kind not in "US":
        raise DataError(f"{source}: {key} has dtype {a.dtype} but must hold strings")
    if a.ndim != ndim:
        what = "a single string" if ndim == 0 else "a 1-d array of strings"
        raise DataError(f"{source}: {key} has shape {tuple(a.shape)} but must be {what}")
    if a.dtype.kind == "S":
        try:
            a = np.char.decode(a, "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{source}: {key} is not valid UTF-8 text ({e.reason})") from None
    return a


def _check_shape(key: str, a: np.ndarray, want: tuple, doc: str, source: str) -> None:
    if tuple(a.shape) != tuple(want):
        axis = next(i for i, (x, y) in enumerate(zip(a.shape, want)) if x != y)
        raise DataError(
            f"{source}: {key} has shape {tuple(a.shape)} but must be {doc} = {tuple(want)} "
            f"(axis {axis} disagrees)"
        )


def _checked_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """Checks every schema-v1 rule on ``arrays`` and returns them cast to the schema's dtypes.

    The result holds the required keys as numpy arrays (``gen_methods`` as a tuple of str,
    ``meta`` as a dict) and ``oracle`` as a dict of the ``oracle_*`` arrays without the prefix.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"{source}: required key '{missing[0]}' is missing (schema v1 needs "
            f"{', '.join(REQUIRED_KEYS)})"
        )
    unknown = sorted(k for k in arrays if k not in REQUIRED_KEYS and not k.startswith(ORACLE_PREFIX))
    if unknown:
        raise DataError(
            f"{source}: key '{unknown[0]}' is not part of schema v1 (allowed: "
            f"{', '.join(REQUIRED_KEYS)}, and optional {ORACLE_PREFIX}* keys)"
        )

    version = np.asarray(arrays["schema_version"])
    if version.dtype.kind not in "iu" or version.ndim != 0:
        raise DataError(
            f"{source}: schema_version must be an integer scalar, got dtype "
            f"{version.dtype} with shape {tuple(version.shape)}"
        )
    if int(version) != SCHEMA_VERSION:
        raise DataError(
            f"{source}: schema_version = {int(version)} is not supported (this leverjax reads "
            f"schema version {SCHEMA_VERSION})"
        )

    # dtype kinds and ranks
    emb = _float_array(arrays, "emb", 2, "[N, d]", source)
    query_ids = _int_array(arrays, "query_ids", 1, "[Q]", np.int32, source)
    pool_ids = _int_array(arrays, "pool_ids", 2, "[Q, K]", np.int32, source)
    traj = _int_array(arrays, "traj", 3, "[Q, M, S]", np.int32, source)
    acc = _float_array(arrays, "acc", 2, "[Q, M]", source, kinds="fiu")
    correct = _float_array(arrays, "correct", 2, "[Q, M]", source, kinds="fiub")
    gt_prob = _float_array(arrays, "gt_prob", 2, "[Q, M]", source, kinds="fiu")
    rel = _float_array(arrays, "rel", 2, "[Q, M]", source, kinds="fiu")
    gen_method = _int_array(arrays, "gen_method", 2, "[Q, M]", np.int8, source)
    gen_methods = _str_value(arrays, "gen_methods", 1, source)
    split = _int_array(arrays, "split", 1, "[Q]", np.int8, source)
    meta_text = _str_value(arrays, "meta", 0, source)

    # shapes between keys
    n, d = emb.shape
    if n == 0 or d == 0:
        raise DataError(f"{source}: emb has shape {tuple(emb.shape)} but needs N >= 1 rows and d >= 1 columns")
    q = query_ids.shape[0]
    if q == 0:
        raise DataError(f"{source}: query_ids is empty; a data set needs at least one query")
    if pool_ids.shape[0] != q:
        _check_shape("pool_ids", pool_ids, (q, pool_ids.shape[1]), "[Q, K] with Q from query_ids", source)
    k = pool_ids.shape[1]
    if k == 0:
        raise DataError(f"{source}: pool_ids has shape {tuple(pool_ids.shape)} but needs K >= 1 pool slots")
    if traj.shape[0] != q:
        _check_shape("traj", traj, (q,) + traj.shape[1:], "[Q, M, S] with Q from query_ids", source)
    m, s = traj.shape[1], traj.shape[2]
    if m == 0 or s == 0:
        raise DataError(f"{source}: traj has shape {tuple(traj.shape)} but needs M >= 1 and S >= 1")
    if s > k:
        raise DataError(
            f"{source}: traj has S = {s} steps but pools have only K = {k} slots; a trajectory "
            f"cannot pick {s} distinct positions"
        )
    for key, a in (("acc", acc), ("correct", correct), ("gt_prob", gt_prob), ("rel", rel),
                   ("gen_method", gen_method)):
        _check_shape(key, a, (q, m), "[Q, M] with Q from query_ids and M from traj", source)
    _check_shape("split", split, (q,), "[Q] with Q from query_ids", source)
    if gen_methods.shape[0] == 0:
        raise DataError(f"{source}: gen_methods is empty; it must name at least one method")

    # values
    _reject(~np.isfinite(emb), source, "emb", emb, "is not finite (NaN and inf are not allowed in embeddings)")
    _reject((query_ids < 0) | (query_ids >= n), source, "query_ids", query_ids, f"is outside emb (N = {n} rows)")
    _reject(pool_ids < -1, source, "pool_ids", pool_ids, "is invalid (pool ids are rows of emb, or -1 for padding)")
    _reject(pool_ids >= n, source, "pool_ids", pool_ids, f"is outside emb (N = {n} rows)")

    _reject(traj < -1, source, "traj", traj, "is invalid (positions are 0..K-1, or -1 for padding)")
    _reject(traj >= k, source, "traj", traj, f"is outside the pool (K = {k})")
    padded = traj < 0
    _reject(padded.any(axis=2) & ~padded.all(axis=2), source, "traj", traj,
            "is partially padded (a trajectory is either all -1 or has no -1)")
    tmask = ~padded[..., 0]
    safe = np.where(padded, 0, traj)
    slot = np.take_along_axis(pool_ids, safe.reshape(q, m * s), axis=1).reshape(q, m, s)
    on_pad = (slot < 0) & ~padded
    if on_pad.any():
        i = _first(on_pad)
        raise DataError(
            f"{source}: traj{_fmt_index(i)} = {traj[i]} points at a padded pool slot "
            f"(pool_ids[{i[0]}, {traj[i]}] = -1)"
        )
    if s > 1:
        srt = np.sort(traj, axis=2)
        rep = ((srt[..., 1:] == srt[..., :-1]).any(axis=2)) & tmask
        if rep.any():
            i = _first(rep)
            row = traj[i]
            vals, counts = np.unique(row, return_counts=True)
            raise DataError(
                f"{source}: traj{_fmt_index(i)} = {_fmt_value(row)} repeats pool position "
                f"{vals[counts > 1][0]} (a trajectory never picks a position twice)"
            )

    _reject(tmask & ~((acc >= 0.0) & (acc <= 1.0)), source, "acc", acc, "is outside [0, 1]")
    _reject(tmask & ~((correct == 0.0) | (correct == 1.0)), source, "correct", correct, "is not 0 or 1")
    for key, a in (("gt_prob", gt_prob), ("rel", rel)):
        _reject(tmask & np.isinf(a), source, key, a, "is infinite (use NaN for an unknown value)")
    g = gen_methods.shape[0]
    _reject(tmask & ((gen_method < 0) | (gen_method >= g)), source, "gen_method", gen_method,
            f"is outside gen_methods (G = {g} names)")
    _reject(~np.isin(split, list(SPLITS)), source, "split", split, "is not a known split (0 train, 1 val, 2 test)")
    if not (split == 0).any():
        raise DataError(f"{source}: split has no train query (value 0); training needs at least one")

    try:
        meta = json.loads(str(meta_text))
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: meta is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{source}: meta must be a JSON object, got a JSON {type(meta).__name__}")

    oracle = {}
    for key in sorted(arrays):
        if key.startswith(ORACLE_PREFIX):
            a = np.asarray(arrays[key])
            if a.dtype.kind not in "fiub":
                raise DataError(f"{source}: {key} has dtype {a.dtype} but must be numeric")
            oracle[key[len(ORACLE_PREFIX):]] = a

    return dict(
        emb=emb, query_ids=query_ids, pool_ids=pool_ids, traj=traj, acc=acc, correct=correct,
        gt_prob=gt_prob, rel=rel, gen_method=gen_method,
        gen_methods=tuple(str(x) for x in gen_methods.tolist()), split=split, meta=meta,
        oracle=oracle,
    )


def validate_arrays(arrays: Mapping[str, np.ndarray], *, source: str) -> None:
    """Checks ``arrays`` (key → array, as stored in a file) against every rule of schema v1.

    Raises :class:`DataError` naming ``source``, the key, the rule and an offending index.
    """
    _checked_arrays(arrays, source)


def dataset_from_arrays(arrays: Mapping[str, np.ndarray], *, source: str) -> Dataset:
    """The :class:`Dataset` held by ``arrays`` (file keys), after checking every schema rule."""
    return Dataset(**_checked_arrays(arrays, source))


def dataset_to_arrays(ds: Dataset) -> dict[str, np.ndarray]:
    """The file keys of ``ds``: schema arrays, ``meta`` as a JSON string, ``oracle_*`` arrays."""
    arrays = {
        "schema_version": np.asarray(SCHEMA_VERSION, dtype=np.int32),
        "emb": np.asarray(ds.emb, np.float32),
        "query_ids": np.asarray(ds.query_ids, np.int32),
        "pool_ids": np.asarray(ds.pool_ids, np.int32),
        "traj": np.asarray(ds.traj, np.int32),
        "acc": np.asarray(ds.acc, np.float32),
        "correct": np.asarray(ds.correct, np.float32),
        "gt_prob": np.asarray(ds.gt_prob, np.float32),
        "rel": np.asarray(ds.rel, np.float32),
        "gen_method": np.asarray(ds.gen_method, np.int8),
        "gen_methods": np.asarray(list(ds.gen_methods), dtype=str),
        "split": np.asarray(ds.split, np.int8),
        "meta": np.asarray(dumps_strict(ds.meta, sort_keys=True)),
    }
    for key, a in ds.oracle.items():
        arrays[ORACLE_PREFIX + key] = np.asarray(a)
    return arrays


# --------------------------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------------------------


def read_npz_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array stored in the .npz archive ``path``, without checking the schema.

    Raises :class:`DataError` for a missing file, a directory, a file that is not an .npz
    archive, or an entry that holds pickled Python objects.
    """
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not an .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: is not an .npz archive ({_short(e)})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array, not an .npz archive of named arrays")
    arrays: dict[str, np.ndarray] = {}
    with loaded:
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError as e:
                if "pickle" in str(e).lower() or "object" in str(e).lower():
                    raise DataError(
                        f"{path}: key '{key}' holds pickled Python objects, which a leverjax "
                        f".npz may not contain"
                    ) from None
                raise DataError(f"{path}: key '{key}' cannot be read ({_short(e)})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: key '{key}' cannot be read ({_short(e)})") from None
    return arrays


def _short(e: BaseException) -> str:
    """The first line of an exception's message."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_npz(path: str) -> Dataset:
    """Loads and validates the schema-v1 file ``path``; every broken rule raises :class:`DataError`."""
    return dataset_from_arrays(read_npz_arrays(path), source=path)


def save_npz(ds: Dataset, path: str) -> None:
    """Writes ``ds`` to ``path`` atomically (a temporary file in the same folder, then a rename).

    ``meta`` is stored as a JSON string and each ``oracle`` array under ``oracle_<name>``. The
    parent folder is created if needed. A path that cannot be written raises :class:`DataError`.
    """
    arrays = dataset_to_arrays(ds)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        raise DataError(f"{path}: cannot be written ({e.strerror or _short(e)})") from None


# --------------------------------------------------------------------------------------------
# Filters and device arrays
# --------------------------------------------------------------------------------------------


def filter_queries(
    ds: Dataset,
    *,
    require_positive_query: bool = False,
    min_group_size: int = 1,
    positive_threshold_rewards: np.ndarray | None = None,
) -> tuple[Dataset, dict]:
    """The queries of ``ds`` that pass the reference's query filters, and what was dropped and why.

    A query is dropped when it has fewer than ``min_group_size`` labelled trajectories (the
    default 1 drops queries left empty), or, with ``require_positive_query``, when none of its
    trajectories is a positive: a raw reward ≥ 1.0 in ``positive_threshold_rewards`` [Q, M] when
    given (the reference's rule), else ``correct`` = 1 (the same for the default reward mode).
    A query failing both rules is counted once, as too small. Raises :class:`DataError` when no
    train query is left.
    """
    if min_group_size < 0:
        raise ConfigError(f"min_group_size = {min_group_size} must be >= 0")
    mask = ds.traj_mask
    small = mask.sum(axis=1) < min_group_size
    no_pos = np.zeros(ds.num_queries, bool)
    if require_positive_query:
        if positive_threshold_rewards is None:
            positive = (ds.correct > 0.5) & mask
        else:
            r = np.asarray(positive_threshold_rewards)
            if r.shape != mask.shape:
                raise ConfigError(
                    f"positive_threshold_rewards has shape {r.shape} but must be [Q, M] = {mask.shape}"
                )
            positive = (r >= 1.0) & mask
        no_pos = ~positive.any(axis=1) & ~small
    keep = ~small & ~no_pos
    out = ds.subset(np.flatnonzero(keep))
    counts = {
        "queries_in": ds.num_queries,
        "kept": int(keep.sum()),
        "dropped_small_group": int(small.sum()),
        "dropped_no_positive": int(no_pos.sum()),
        "kept_train": int((out.split == 0).sum()),
        "kept_val": int((out.split == 1).sum()),
        "kept_test": int((out.split == 2).sum()),
    }
    if counts["kept_train"] == 0:
        raise DataError(
            f"no train query is left after filtering (min_group_size = {min_group_size}, "
            f"require_positive_query = {require_positive_query}): dropped "
            f"{counts['dropped_small_group']} as too small and {counts['dropped_no_positive']} "
            f"without a positive"
        )
    return out, counts
