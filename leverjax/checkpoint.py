"""Orbax checkpoints of the (vmapped) training state, with a JSON record beside each one.

Layout of a run directory ``checkpoints/<experiment>/``::

    config.json        the resolved config and the runs (sweep values, seeds)
    ckpt/<epoch>/      orbax: {"state": the training state of all runs, "meta": progress + history}
    best/              orbax: {"params": best-epoch parameters of all runs (leading run axis), "meta": config}
    metrics.jsonl      one record per phase, epoch and run (rewritten from the history at each save)
    summary.json       final test metrics per run and their mean ± 95% CI

Orbax writes each step into a temporary folder and renames it when complete, so a run killed at any
moment leaves only whole checkpoints behind.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from leverjax import distributed
from leverjax.errors import LeverjaxError


class CheckpointStore:
    """Per-epoch checkpoints of one run directory (``keep`` most recent are kept)."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(os.path.join(self.directory, "ckpt"), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                 meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.close()


def save_params(path: str, params: Any, meta: dict) -> None:
    """Writes a parameter pytree and a JSON record (config, runs) to the orbax folder ``path``.

    An existing folder is replaced only once the new one is complete.

    With several processes every one of them calls this with the same arguments (orbax writes each
    array's shards from the process that holds them; process 0 moves the folder into place).
    """
    path = os.path.abspath(path)
    tmp = f"{path}.writing"
    primary = distributed.is_primary()
    if primary:
        shutil.rmtree(tmp, ignore_errors=True)
    distributed.barrier("save-params")
    with ocp.CheckpointManager(tmp, options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False)) as mngr:
        mngr.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
                  force=True)
        mngr.wait_until_finished()
    distributed.barrier("save-params-written")
    if primary:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    distributed.barrier("save-params-moved")


def load_params(path: str) -> tuple[Any, dict]:
    """Reads what :func:`save_params` wrote: ``(params, meta)`` (arrays as numpy-backed jax arrays)."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise LeverjaxError(f"no leverjax checkpoint folder at {path}")
    with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(create=False)) as mngr:
        step = mngr.latest_step()
        if step is None:
            raise LeverjaxError(f"{path} holds no finished checkpoint")
        out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                         meta=ocp.args.JsonRestore()))
    return out["params"], out["meta"]


def write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def write_jsonl_atomic(path: str, records: list[dict]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x)}")


def tree_to_host(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jax.device_get(x), tree)
