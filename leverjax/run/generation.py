"""New RL data from a trained selector: candidates with the original's mix, labelled by a scorer.

:func:`generate` proposes every query's candidates (:mod:`leverjax.core.sampling` for the selector's beams and
samples, :mod:`leverjax.data.candidates` for retrieval, random picks and the de-duplication), has a scorer label
each new prompt once, and returns the data set with those queries' trajectories replaced or merged. The command
is ``python -m leverjax.data.generate`` (:mod:`leverjax.tools.generate`); the data loop's rounds
(:mod:`leverjax.run.rounds`) call :func:`generate` between their trainings.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from leverjax.core import sampling
from leverjax.data import candidates as cand_lib
from leverjax.data.npz import Dataset
from leverjax.errors import DataError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Generated:
    """The new data set and what it cost: proposals and kept candidates per method, prompts and scorer calls."""

    dataset: Dataset
    rows: np.ndarray
    proposed: dict[str, int]
    kept: dict[str, int]
    prompts: int
    scorer_calls: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {"queries": int(len(self.rows)), "proposed": self.proposed, "kept": self.kept,
                "prompts": self.prompts, "scorer_calls": self.scorer_calls, "seconds": round(self.seconds, 2)}


def query_rows(ds: Dataset, splits: tuple[str, ...] = ("train",)) -> np.ndarray:
    """The rows of the queries of ``splits`` (generation is for the training queries by default: the
    evaluation splits keep their own trajectories, so rounds are evaluated on the same data)."""
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise DataError(f"splits {','.join(splits) or '(none)'}: choose from {', '.join(SPLITS)}")
    rows = np.sort(np.concatenate([ds.split_index(s) for s in splits]))
    if not len(rows):
        raise DataError(f"the data has no {'/'.join(splits)} query to generate candidates for")
    return rows


def check_selector(params, ds: Dataset, what: str = "the selector") -> None:
    """The selector's input width must be the data's embedding width."""
    kernel = params["input_proj"]["kernel"]
    dim = int(kernel.shape[-2])
    if dim != ds.dim:
        raise DataError(f"{what} takes embeddings of width d={dim} but the data's are d={ds.dim}")


@functools.partial(jax.jit, static_argnames=("selector", "mix", "num_steps"))
def _proposal_chunk(params, emb, qrows, pools, key, *, selector, mix: cand_lib.Mix, num_steps: int) -> dict:
    """Beams and samples of one chunk of queries: one compiled program per (selector, mix, shapes), reused by
    every generation with them (each run of a round, each chunk)."""
    mask = pools >= 0
    q, c = emb[qrows], emb[jnp.maximum(pools, 0)]
    out = {}
    if mix.beam:
        out["beam"] = sampling.beam_search(selector, params, q, c, mask, num_steps, mix.beam)[0]
    for i, (tau, n) in enumerate(mix.samples):
        if n:
            out[f"sample{i}"] = sampling.sample(selector, params, q, c, mask, num_steps, n, jax.random.fold_in(key, i),
                                                temperature=tau)[0]
    return out


def selector_proposals(selector, params, ds: Dataset, rows: np.ndarray, mix: cand_lib.Mix, *, seed: int = 0,
                       chunk: int = 256) -> list[cand_lib.Proposals]:
    """The selector's beams and samples for ``rows`` (eval mode), in chunks of ``chunk`` queries (the last one
    padded, so every chunk runs the same program)."""
    emb = jnp.asarray(ds.emb)
    key = jax.random.PRNGKey(seed)
    parts: dict[str, list] = {}
    for start in range(0, len(rows), chunk):
        idx = rows[start:start + chunk]
        pad = np.concatenate([idx, np.repeat(idx[-1:], chunk - len(idx))]) if len(rows) > chunk else idx
        got = _proposal_chunk(params, emb, jnp.asarray(ds.query_ids[pad]), jnp.asarray(ds.pool_ids[pad]),
                              jax.random.fold_in(key, start), selector=selector, mix=mix, num_steps=ds.num_steps)
        for k, v in got.items():
            parts.setdefault(k, []).append(np.asarray(v)[:len(idx)])
    out = []
    if mix.beam:
        picks = np.concatenate(parts["beam"])
        out.append(cand_lib.Proposals("beam", picks, rank=np.broadcast_to(np.arange(mix.beam), picks.shape[:2])))
    for i, (tau, n) in enumerate(mix.samples):
        if n:
            out.append(cand_lib.Proposals("sample", np.concatenate(parts[f"sample{i}"]), temperature=tau))
    return out


def generate(selector, params, ds: Dataset, scorer, *, mix: cand_lib.Mix, rows: np.ndarray | None = None,
             mode: str = "replace", seed: int = 0, chunk: int = 256, source: str = "generated data") -> Generated:
    """``ds`` with the queries ``rows`` (default: the train split) given new candidates from ``selector``
    (params ``params``) with ``mix``, labelled by ``scorer`` (anything with ``score(query_rows, demo_rows)``:
    :class:`~leverjax.data.scorer.OracleScorer`, or a :class:`~leverjax.data.scorer.PromptCache`, which counts
    its calls); ``mode`` ``replace`` or ``merge`` (module docstring of :mod:`leverjax.data.candidates`)."""
    if mode not in cand_lib.COMBINE_MODES:
        raise DataError(f"mode {mode!r} is not one of {', '.join(cand_lib.COMBINE_MODES)}")
    t0 = time.perf_counter()
    rows = query_rows(ds) if rows is None else np.asarray(rows)
    check_selector(params, ds)
    s = ds.num_steps
    props = selector_proposals(selector, params, ds, rows, mix, seed=seed, chunk=chunk)
    rng = np.random.default_rng([seed, 1])
    if mix.retrieval:
        props.append(cand_lib.Proposals("retrieval", cand_lib.retrieval_positions(ds, rows, mix.retrieval, s)))
    if mix.random:
        props.append(cand_lib.Proposals("random", cand_lib.random_positions(ds, rows, mix.random, s, rng)))
    # the original's order of proposal (beam, samples, retrieval, random) decides where a set first appears
    existing = None
    if mode == "merge":
        existing = [[tuple(t) for t in ds.traj[r][ds.traj_mask[r]].tolist()] for r in rows]
    kept = cand_lib.deduplicate(props, existing)
    proposed = {m: 0 for m in cand_lib.METHODS}
    for p in props:
        proposed[p.method] += int((p.picks[..., 0] >= 0).sum())
    counts = {m: sum(1 for cands in kept for c in cands if c["method"] == m) for m in cand_lib.METHODS}
    q_rows, d_rows = cand_lib.prompts_of(ds, rows, kept)
    calls_before = getattr(scorer, "calls", None)
    scores = scorer.score(q_rows, d_rows) if len(q_rows) else {k: np.zeros(0, np.float32) for k in
                                                                ("acc", "correct", "gt_prob", "rel")}
    calls = (scorer.calls - calls_before) if calls_before is not None else len(q_rows)
    labels = cand_lib.schema_labels(scores)
    new = cand_lib.combine(ds, rows, kept, labels, mode=mode, source=source,
                           slots=cand_lib.slots_for(ds, mix, mode))
    return Generated(new, rows, proposed, counts, int(len(q_rows)), int(calls), time.perf_counter() - t0)
