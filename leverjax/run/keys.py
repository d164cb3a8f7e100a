"""The facts that name things across the run layer, each in one place: short hashes, the data set's
fingerprint and the key of a run's SFT/RCE prefix (what the prefix cache and the launcher's scheduling
both go by)."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from leverjax.core import config as config_lib

PREFIX_LAYOUT = 3  # in every key: prefix entries of an older layout (without best_* or ref_val_picks) are never read


def short_hash(obj: Any, n: int = 8) -> str:
    """The first ``n`` hex digits of the SHA-1 of ``obj`` as sorted JSON."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def data_fingerprint(ds) -> str:
    """SHA-1 of a data set's contents (embeddings, pools, trajectories, labels, splits)."""
    digest = hashlib.sha1()
    for a in (ds.emb, ds.query_ids, ds.pool_ids, ds.traj, ds.acc, ds.correct, ds.gt_prob, ds.rel, ds.split):
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def init_marker(init_from: str | None) -> str | None:
    """``init_from`` as a prefix key sees it: the file's absolute path and modification time."""
    if init_from and os.path.exists(init_from):
        return f"{os.path.abspath(init_from)}@{os.path.getmtime(init_from)}"
    return init_from


def prefix_phases(cfg: config_lib.Config, through: str) -> list[tuple[str, int]]:
    """The phases before GRPO up to ``through`` (sft | rce) that ``cfg`` trains, with their epochs."""
    phases = [("sft", cfg.sft_epochs)] if cfg.sft_epochs else []
    if through == "rce" and cfg.rce_epochs:
        phases.append(("rce", cfg.rce_epochs))
    return phases


def prefix_key(cfg: config_lib.Config, seed: int, through: str, data: str, init_from: str | None) -> str:
    """Equal keys reach equal states after the phases up to ``through`` (sft | rce): the fields acting there,
    the seed, the data's fingerprint (``data``), the starting parameters and the phases' epochs."""
    blob = json.dumps({"layout": PREFIX_LAYOUT, "config": config_lib.prefix_fields(cfg, through), "seed": seed,
                       "data": data, "init_from": init_marker(init_from), "phases": prefix_phases(cfg, through)},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]
