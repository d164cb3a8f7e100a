"""Atomic file writes: every file leverjax writes appears whole or not at all.

:func:`atomic_path` yields a temporary path in the target's folder and renames it over the target when
the block succeeds (removing it otherwise), so a reader, or a run killed mid-write, never sees a partial
file. The text, JSON and JSON-lines writers below go through it.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Any, Iterator


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


def write_text_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        f.write(text)


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def write_json_atomic(path: str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, default=_json_default))


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, default=_json_default) + "\n" for r in records))
