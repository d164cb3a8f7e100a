"""Orbax checkpoints of the (vmapped) training state, and look-ups in a results directory.

Layout of one compiled group's folder ``<results>/runs/<group>/``::

    config.json        the resolved config and the runs (sweep values, seeds)
    ckpt/<epoch>/      orbax: {"state": the training state of all runs, "meta": progress + history}
    best/              orbax: {"params": best-epoch parameters of all runs (leading run axis), "meta": config}
    metrics.jsonl      one record per phase, epoch and run (rewritten from the history at each save)

Orbax writes each step into a temporary folder and renames it when complete, so a run killed at any
moment leaves only whole checkpoints behind.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from leverjax.errors import LeverjaxError
from leverjax.fileio import strict_json


class CheckpointStore:
    """Per-epoch checkpoints of one run directory (``keep`` most recent are kept).

    Saves are asynchronous in a single process: orbax copies the state to the host and writes it in the
    background while the next epoch trains (a save waits for the one before it); :meth:`close` waits for the
    last one. With several processes they are synchronous, so a process that dies cannot leave the others
    waiting in a background save.
    """

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=jax.process_count() == 1)
        self.manager = ocp.CheckpointManager(os.path.join(self.directory, "ckpt"), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(strict_json(meta))), force=True)

    def restore_meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                 meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def save_params(path: str, params: Any, meta: dict) -> None:
    """Writes a parameter pytree and a JSON record (config, runs) to the orbax folder ``path``.

    Each save is a new orbax step (orbax finalises a step only once it is complete) and the manager keeps
    one, so a re-run replaces the parameters without a moment where none are there.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(os.path.abspath(path), options=options) as mngr:
        step = (mngr.latest_step() or 0) + 1
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                meta=ocp.args.JsonSave(strict_json(meta))),
                  force=True)
        mngr.wait_until_finished()


def publish(partial: str, path: str, *, replace: bool = False) -> bool:
    """Moves the finished folder ``partial`` to ``path`` in one rename, so that ``path``, once there, is
    complete (readers that find it never see a save in progress). If ``path`` is there (another run writing
    the same entry finished first), ``partial`` is dropped and ``False`` returned; with ``replace`` the old
    folder is first moved aside and deleted (a reader in between finds no entry, never half of one)."""
    if replace and os.path.isdir(path):
        old = f"{partial}.old"
        os.rename(path, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(partial, path)
        return True
    except OSError:
        if not os.path.isdir(path):
            raise
        shutil.rmtree(partial, ignore_errors=True)
        return False


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


def status_file_name(run_name: str) -> str:
    """``status/<this>`` of a results directory's run named ``run_name`` (e.g. ``scheme2[kl_beta=0.05]/seed=1``)."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", run_name.replace("/", ".")) + ".json"


def resolve_params_folder(path: str, run_index: int = 0, params: str = "best") -> tuple[str, int]:
    """``(parameter folder, run index in it)`` of run ``run_index`` of ``path``.

    ``path`` is a parameter folder (returned as is) or a results directory (``checkpoints/<experiment>``,
    ``results/<grid>``, recognised by its ``grid.json``): there ``run_index`` counts the grid's finished
    runs in the order of ``grid.json``, and the answer is the ``best/`` (or, with ``params="final"``, the
    ``final/``) folder of that run's group.
    """
    if params not in ("best", "final"):
        raise LeverjaxError(f"params={params!r}: choose best or final")
    grid_file = os.path.join(path, "grid.json")
    if not os.path.isfile(grid_file):
        return path, run_index
    with open(grid_file) as f:
        names = [r["name"] for r in json.load(f)["runs"]]
    found = []
    for name in names:
        status_file = os.path.join(path, "status", status_file_name(name))
        try:
            with open(status_file) as f:
                status = json.load(f)
            with open(os.path.join(path, status["directory"], "results.json")) as f:
                group_runs = [r["name"] for r in json.load(f)["runs"]]
        except (OSError, ValueError, KeyError):
            continue
        if status.get("state") == "done" and name in group_runs:
            found.append((name, os.path.join(path, status["directory"], params), group_runs.index(name)))
    if not 0 <= run_index < len(found):
        listing = "; ".join(f"{i}: {name}" for i, (name, _, _) in enumerate(found)) or "none"
        raise LeverjaxError(f"--run={run_index}: {path} has {len(found)} finished run(s) ({listing})")
    return found[run_index][1], found[run_index][2]
