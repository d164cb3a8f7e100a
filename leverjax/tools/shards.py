"""Resumable output in shards: a long job writes each finished shard atomically under ``PATH.shards/``
beside a manifest of its settings, and a rerun with the same settings takes the finished shards as they
are. The exporter's table (``PATH.npy`` + ``PATH.ids.json``) is assembled from them at the end."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from leverjax.errors import ConfigError
from leverjax.fileio import atomic_path, dumps_strict
from leverjax.tools.examples import Example

MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """``PATH.npy`` (table), ``PATH.ids.json`` (ids + meta) and ``PATH.shards/`` (work in progress)."""

    table: str
    ids: str
    shards: str

    def shard(self, k: int, ext: str) -> str:
        """``PATH.shards/shard_00012.npy`` or ``.json``."""
        return os.path.join(self.shards, f"shard_{k:05d}.{ext}")


def output_paths(out: str) -> OutputPaths:
    """The output files for ``--out`` (with or without ``.npy``)."""
    if not out:
        raise ConfigError("--out is empty; give the path of the embedding table to write")
    stem = out[: -len(".npy")] if out.endswith(".npy") else out
    return OutputPaths(stem + ".npy", stem + ".ids.json", stem + ".shards")


def _atomic_write(path: str, write: Callable[[Any], None]) -> None:
    """Writes through a temporary file in the same folder, then renames it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save_npy(path: str, array: np.ndarray) -> None:
    """Atomically writes a .npy file."""
    _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))


def save_json(path: str, obj: Any) -> None:
    """Atomically writes a JSON file."""
    _atomic_write(path, lambda f: f.write(dumps_strict(obj, indent=1).encode("utf-8")))


@dataclasses.dataclass
class Shard:
    """The rows of one shard, the examples they belong to, and the examples it skipped."""

    rows: np.ndarray
    example_index: list[int]
    ids: list
    skipped: list[dict]


def write_shard(paths: OutputPaths, k: int, shard: Shard) -> None:
    """Writes the rows, then the json that marks the shard finished."""
    save_npy(paths.shard(k, "npy"), shard.rows)
    save_json(paths.shard(k, "json"), {"example_index": shard.example_index, "ids": shard.ids,
                                       "skipped": shard.skipped})


def read_finished_shard(paths: OutputPaths, k: int, examples: Sequence[Example]) -> Shard | None:
    """A finished shard covering exactly ``examples``, or ``None`` when it must be (re)computed."""
    npy, meta = paths.shard(k, "npy"), paths.shard(k, "json")
    if not (os.path.isfile(npy) and os.path.isfile(meta)):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            info = json.load(f)
        rows = np.load(npy, allow_pickle=False)
        covered = sorted(info["example_index"] + [s["index"] for s in info["skipped"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if covered != [e.index for e in examples] or rows.shape[0] != len(info["example_index"]):
        return None
    return Shard(rows, info["example_index"], info["ids"], info["skipped"])


def check_existing_output(paths: OutputPaths, overwrite: bool) -> None:
    """A finished export (the table without a shard folder) is only redone with ``--overwrite``."""
    if os.path.exists(paths.table) and not os.path.isdir(paths.shards) and not overwrite:
        raise ConfigError(f"{paths.table} already exists; pass --overwrite to export again")


def prepare_shard_folder(paths: OutputPaths, fingerprint: dict) -> None:
    """Creates ``PATH.shards`` with its manifest, or checks that existing shards match the settings."""
    manifest = os.path.join(paths.shards, MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            previous = json.load(f).get("fingerprint", {})
        changed = [f"{k}: {previous.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if previous.get(k) != v]
        if changed:
            raise ConfigError(
                f"the unfinished export in {paths.shards} used other settings ({'; '.join(changed)}); "
                "re-run with the same settings to finish it, or delete that folder"
            )
        return
    os.makedirs(paths.shards, exist_ok=True)
    save_json(manifest, {"format": "leverjax.tools.export_qwen.shards/1", "fingerprint": fingerprint})
