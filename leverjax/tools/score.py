"""Scores a data set with a trained selector: trajectory log-probs and greedy selections.

Command::

    python -m leverjax.tools.score --checkpoint=PATH --data=PATH.npz --out=PATH.npz [--run=0] [--shots=4]

``--checkpoint`` is a leverjax parameter folder (``checkpoints/<experiment>/best``; ``--run`` picks
one run of a vmapped grid) or an original ``.pt``/``.ckpt`` (or an export of ours); see
:mod:`leverjax.tools.interop`. The selector config of a leverjax folder comes from its meta; that of a
torch file from its shapes and its config (``--num_heads`` when it does not say, default 1;
temperature from its config, default 0.1; ``--temperature`` overrides either).

Everything runs in eval mode (no dropout), jitted over chunks of ``--chunk`` queries. The output
``.npz`` holds, for the Q queries of the data file in its order:

=================  ==================  =========================================================
key                dtype, shape        meaning
=================  ==================  =========================================================
``logp``           float32 [Q, M]      log-prob Σ_t log p_t[traj_t] of every trajectory; NaN where
                                       the trajectory slot is padded
``greedy``         int32 [Q, shots]    greedy selections in global ids (rows of ``emb``), in pick
                                       order; the n-shot selection is ``greedy[:, :n]`` (greedy
                                       decoding is sequential, so the n-shot picks are the first n
                                       of the shots-step decode); −1 past a pool's valid candidates
``greedy_pos``     int32 [Q, shots]    the same picks as pool positions (−1 likewise)
``query_ids``      int32 [Q]           the queries' global ids (as in the data file)
``split``          int8 [Q]            0 train, 1 val, 2 test (as in the data file)
``meta``           str (JSON)          checkpoint, run, selector config, data file, shots, time
=================  ==================  =========================================================
"""
from __future__ import annotations

import datetime
import os
import time
from typing import Any

import numpy as np

from leverjax.errors import ConfigError, DataError, LeverjaxError
from leverjax.fileio import atomic_path, dumps_strict


def score_arrays(params, selector_config, dataset, *, shots: int = 4, chunk: int = 256) -> dict[str, np.ndarray]:
    """``logp [Q, M]`` (NaN padded), ``greedy`` / ``greedy_pos`` ``[Q, shots]`` for every query of ``dataset``."""
    import jax
    import jax.numpy as jnp

    from leverjax.core.model import Selector

    if shots < 1:
        raise ConfigError(f"--shots={shots} must be at least 1")
    if chunk < 1:
        raise ConfigError(f"--chunk={chunk} must be at least 1")
    selector = Selector(selector_config)

    @jax.jit
    def run(params, query_emb, cand_emb, pool_mask, traj):
        logp = selector.log_probs(params, query_emb, cand_emb, pool_mask, traj)
        picks = selector.greedy(params, query_emb, cand_emb, pool_mask, shots, allow_stop=False)  # never STOP
        return logp, picks

    q = dataset.num_queries
    emb = np.asarray(dataset.emb, np.float32)
    pool_ids = np.asarray(dataset.pool_ids)
    size = min(chunk, q)
    logp = np.empty((q, dataset.max_trajectories), np.float32)
    picks = np.empty((q, shots), np.int32)
    for start in range(0, q, size):
        idx = np.arange(start, start + size)
        real = idx < q
        idx = np.minimum(idx, q - 1)  # pad the last chunk by repeating a query (one compiled shape)
        out = run(params, jnp.asarray(emb[dataset.query_ids[idx]]), jnp.asarray(emb[np.maximum(pool_ids[idx], 0)]),
                  jnp.asarray(pool_ids[idx] >= 0), jnp.asarray(dataset.traj[idx], jnp.int32))
        lp, pk = jax.device_get(out)
        logp[idx[real]] = lp[real]
        picks[idx[real]] = pk[real]
    logp[~dataset.traj_mask] = np.nan
    valid = (pool_ids >= 0).sum(1)
    beyond = np.arange(shots)[None, :] >= valid[:, None]
    greedy_pos = np.where(beyond, -1, picks).astype(np.int32)
    greedy = np.where(beyond, -1, np.take_along_axis(pool_ids, np.maximum(greedy_pos, 0), axis=1)).astype(np.int32)
    return {"logp": logp, "greedy": greedy, "greedy_pos": greedy_pos}


def load_for_scoring(checkpoint: str, *, run_index: int = 0, num_heads: int | None = None,
                     temperature: float | None = None, selector: str | None = None, params: str = "best"):
    """``(params, SelectorConfig, config dict)`` of one selector from any checkpoint."""
    import jax.numpy as jnp

    from leverjax.tools import interop

    weights, cfg = interop.load_checkpoint(checkpoint, run_index=run_index, num_heads=num_heads, selector=selector,
                                           params=params)
    if num_heads is not None and cfg.get("num_heads_known") and cfg["num_heads"] != num_heads:
        raise ConfigError(f"--num_heads={num_heads} but {checkpoint} says num_heads={cfg['num_heads']}")
    sc = interop.selector_config_from(cfg, num_heads=num_heads, temperature=temperature)
    cfg = {**cfg, "num_heads": sc.num_heads, "temperature": sc.temperature}
    return interop._map_tree(weights, jnp.asarray), sc, cfg


def score_file(checkpoint: str, data: str, out: str, *, run_index: int = 0, shots: int = 4, chunk: int = 256,
               num_heads: int | None = None, temperature: float | None = None,
               selector: str | None = None) -> dict[str, Any]:
    """Scores the data file ``data`` with ``checkpoint`` and writes ``out`` (see the module docstring)."""
    from leverjax.data import load_npz

    params, sc, cfg = load_for_scoring(checkpoint, run_index=run_index, num_heads=num_heads,
                                       temperature=temperature, selector=selector)
    ds = load_npz(data)
    if ds.dim != cfg["dim"]:
        raise DataError(f"{data} has embeddings of width d={ds.dim} but {checkpoint} takes d={cfg['dim']}")
    t0 = time.perf_counter()
    arrays = score_arrays(params, sc, ds, shots=shots, chunk=chunk)
    seconds = time.perf_counter() - t0
    meta = {
        "checkpoint": os.path.abspath(checkpoint), "run": run_index, "source": cfg["source"],
        "selector": {"dim": cfg["dim"], "hidden": sc.hidden, "num_layers": sc.num_layers,
                     "num_heads": sc.num_heads, "gated": sc.gated, "temperature": sc.temperature,
                     "preset": cfg.get("preset", "v4_1" if sc.gated else "v2")},
        "num_heads_known": bool(cfg.get("num_heads_known", True)),
        "data": os.path.abspath(data), "shots": shots, "mode": "eval",
        "greedy": "global ids (rows of emb); n-shot selection = greedy[:, :n]; -1 past the pool's valid candidates",
        "logp": "sum over steps of log p(traj step); NaN where the trajectory slot is padded",
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        with atomic_path(out, suffix=".npz") as tmp:
            np.savez(tmp, **arrays, query_ids=np.asarray(ds.query_ids, np.int32), split=np.asarray(ds.split, np.int8),
                     meta=np.asarray(dumps_strict(meta)))
    except OSError as e:
        raise LeverjaxError(f"cannot write {out}: {e.strerror or e}") from None
    return {"meta": meta, "num_queries": ds.num_queries, "seconds": seconds, **arrays}


def _cli() -> None:
    from absl import flags

    from leverjax import command as command_lib

    flags.DEFINE_string("checkpoint", None, "A leverjax parameter folder or a Lever-Plus .pt/.ckpt.", required=True)
    flags.DEFINE_string("data", None, "A schema-v1 .npz data file.", required=True)
    flags.DEFINE_string("out", None, "Output .npz (logp, greedy, greedy_pos, query_ids, split, meta).",
                        required=True)
    flags.DEFINE_integer("run", 0, "Which run of a vmapped leverjax checkpoint.")
    flags.DEFINE_integer("shots", 4, "Greedy selection length; the n-shot selection is greedy[:, :n].")
    flags.DEFINE_integer("chunk", 256, "Queries per jitted chunk (memory bound, not a result).")
    flags.DEFINE_integer("num_heads", None, "Attention heads of a torch file whose config does not say (default 1).")
    flags.DEFINE_float("temperature", None, "Override the softmax temperature (default: the checkpoint's, or 0.1).")
    flags.DEFINE_string("selector", None, "Check a torch file against this selector preset instead of inferring the "
                        "variant from its parameter names.")
    FLAGS = flags.FLAGS

    def main(argv: list[str]) -> None:
        res = score_file(FLAGS.checkpoint, FLAGS.data, FLAGS.out, run_index=FLAGS.run, shots=FLAGS.shots,
                         chunk=FLAGS.chunk, num_heads=FLAGS.num_heads, temperature=FLAGS.temperature,
                         selector=FLAGS.selector)
        sel = res["meta"]["selector"]
        note = "" if res["meta"]["num_heads_known"] else " (heads assumed; --num_heads to set)"
        print(f"selector: d={sel['dim']}, H={sel['hidden']}, {sel['num_layers']} layer(s), {sel['num_heads']} "
              f"head(s){note}, selector {sel['preset']}, temperature {sel['temperature']}")
        finite = np.isfinite(res["logp"])
        print(f"scored {res['num_queries']} queries, {int(finite.sum())} trajectories in {res['seconds']:.1f}s; "
              f"mean log-prob {float(res['logp'][finite].mean()) if finite.any() else float('nan'):.4f}")
        print(f"wrote {FLAGS.out}: logp [Q, M], greedy [Q, {FLAGS.shots}] (global ids), greedy_pos, query_ids, "
              f"split, meta")

    command_lib.run(main, command='python -m leverjax.tools.score',
                    about='Scores a data set with a trained selector: trajectory log-probs and greedy selections.')


if __name__ == "__main__":
    _cli()
