"""Atomic file writes and strict JSON: every file leverjax writes appears whole or not at all, and every
JSON file is strict JSON.

:func:`atomic_path` yields a temporary path in the target's folder and renames it over the target when
the block succeeds (removing it otherwise), so a reader, or a run killed mid-write, never sees a partial
file. The text, JSON and JSON-lines writers below go through it. Python's ``json`` writes NaN and ±inf as
bare tokens that strict parsers (JavaScript, jq, most other languages) reject: :func:`strict_json` turns
them into ``null`` and :func:`dumps_strict` serialises with ``allow_nan=False``, so anything non-finite
that slipped through is an error, not a broken file.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """A temporary path (ending in ``suffix``, for writers that add an extension) renamed to ``path``
    when the block exits normally; the target's folder is created if needed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def strict_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: arrays and NumPy scalars become lists and numbers, and every
    non-finite float (NaN, ±inf) becomes ``None`` (JSON ``null``), so the output is strict JSON.

    Where a value can be undefined, the writer states why beside it (a ``*_reason`` or ``undefined``
    field); this function only guarantees that no bare ``NaN``/``Infinity`` token is ever written.
    """
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (bool, str, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    if hasattr(obj, "tolist"):  # NumPy and jax arrays
        return strict_json(np.asarray(obj).tolist())
    return obj  # anything else: json.dumps serialises it with its ``default`` or raises TypeError


def dumps_strict(obj: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` (``obj``) with ``allow_nan=False``: strict JSON or an error."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)


def records_from_json(records: list[dict]) -> list[dict]:
    """Metric records read back from strict JSON: ``null`` metric values become NaN again."""
    return [{k: (math.nan if v is None else v) for k, v in rec.items()} for rec in records]


def read_json(path: str) -> Any:
    """The JSON in ``path``, or None when it is missing or not JSON (a torn file from a crash before
    atomic writes counts as missing)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as strict JSON (see :func:`strict_json`) to ``path``, atomically."""
    write_text_atomic(path, dumps_strict(obj, indent=1))


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    """One strict-JSON record per line (see :func:`strict_json`), atomically."""
    write_text_atomic(path, "".join(dumps_strict(r) + "\n" for r in records))
