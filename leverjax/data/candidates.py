"""Candidate sets for the data loop: the original's generation mix, de-duplication, merging and labelling.

The original's RL data v4 (``lever_lm/models/v3/rl_data_generation.py``) gives every query, from a trained
selector: ``beam`` beams (beam search, best first), ``sample`` draws at each temperature (step-wise sampling
from softmax(logits / τ), no candidate twice), ``random`` uniform picks and ``retrieval`` similarity windows
(the i-th combination is the candidates ranked i, i+1, ..., i+S−1 by cosine to the query). Candidates that
hold the same demonstrations in any order are one: the one kept is the first of highest priority,
beam > retrieval > sample > random, in the place where that set first appeared.

This module holds the parts that need no selector (the mix, retrieval and random proposals, the
de-duplication, merging and the labels); the selector's beams and samples come from
:mod:`leverjax.core.sampling` through :mod:`leverjax.run.generation`.

A mix is written ``beam=5,sample@1.0=2,sample@1.3=2,random=1,retrieval=5`` (:data:`ORIGINAL_MIX`, the
original's v4 mix: 15 candidates before de-duplication).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from leverjax.data.npz import Dataset, dataset_from_arrays, dataset_to_arrays
from leverjax.errors import ConfigError, DataError

METHODS = ("beam", "sample", "retrieval", "random")  # the names gen_methods holds, as the original's gen_method
PRIORITY = {"beam": 4, "retrieval": 3, "sample": 2, "random": 1}
ORIGINAL_MIX = "beam=5,sample@1.0=2,sample@1.3=2,random=1,retrieval=5"
COMBINE_MODES = ("merge", "replace")


@dataclasses.dataclass(frozen=True)
class Mix:
    """How many candidates of each method a query gets (before de-duplication)."""

    beam: int = 0
    samples: tuple[tuple[float, int], ...] = ()  # (temperature, draws)
    random: int = 0
    retrieval: int = 0

    @property
    def total(self) -> int:
        return self.beam + sum(n for _, n in self.samples) + self.random + self.retrieval

    def counts(self) -> dict[str, int]:
        """Candidates per method name (the samples of every temperature together)."""
        return {"beam": self.beam, "sample": sum(n for _, n in self.samples), "retrieval": self.retrieval,
                "random": self.random}

    def text(self) -> str:
        parts = [f"beam={self.beam}"] if self.beam else []
        parts += [f"sample@{t:g}={n}" for t, n in self.samples if n]
        parts += [f"{k}={v}" for k, v in (("random", self.random), ("retrieval", self.retrieval)) if v]
        return ",".join(parts)


_ITEM = re.compile(r"^(beam|random|retrieval|sample@([0-9]*\.?[0-9]+(?:e-?[0-9]+)?))=([0-9]+)$")


def parse_mix(text: str) -> Mix:
    """The :class:`Mix` written ``text`` (module docstring), or a :class:`ConfigError` naming the bad part."""
    counts: dict[str, int] = {}
    samples: dict[float, int] = {}
    for item in (p.strip() for p in str(text).split(",")):
        if not item:
            continue
        m = _ITEM.match(item)
        if not m:
            raise ConfigError(f"mix entry {item!r} is not one of beam=N, sample@TEMPERATURE=N, random=N, "
                              f"retrieval=N (e.g. {ORIGINAL_MIX})")
        n = int(m.group(3))
        if m.group(2) is not None:
            tau = float(m.group(2))
            if not tau > 0:
                raise ConfigError(f"mix entry {item!r}: the temperature must be positive")
            if tau in samples:
                raise ConfigError(f"mix entry {item!r}: temperature {tau:g} is given twice")
            samples[tau] = n
        else:
            if m.group(1) in counts:
                raise ConfigError(f"mix entry {item!r}: {m.group(1)} is given twice")
            counts[m.group(1)] = n
    mix = Mix(beam=counts.get("beam", 0), samples=tuple(sorted(samples.items())), random=counts.get("random", 0),
              retrieval=counts.get("retrieval", 0))
    if mix.total == 0:
        raise ConfigError(f"the mix {text!r} asks for no candidate: give at least one method a count above 0 "
                          f"(e.g. {ORIGINAL_MIX})")
    return mix


@dataclasses.dataclass
class Proposals:
    """Candidates of one method for queries ``rows``: ``picks [R, n, S]`` pool positions (−1: none), with the
    beam rank ``[R, n]`` of beams and the temperature of samples."""

    method: str
    picks: np.ndarray
    rank: np.ndarray | None = None
    temperature: float | None = None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_positions(ds: Dataset, rows: np.ndarray, count: int, steps: int) -> np.ndarray:
    """``[R, count, S]``: the i-th retrieval candidate of each query is its pool's candidates ranked
    i, ..., i+S−1 by cosine to the query (ties: the lower position first); −1 where the pool is too short."""
    out = np.full((len(rows), count, steps), -1, np.int32)
    for i, r in enumerate(rows):
        valid = np.flatnonzero(ds.pool_ids[r] >= 0)
        cos = _unit(ds.emb[ds.pool_ids[r, valid]]) @ _unit(ds.emb[ds.query_ids[r]])
        order = valid[np.argsort(-cos, kind="stable")]
        for j in range(min(count, len(order) - steps + 1)):
            out[i, j] = order[j:j + steps]
    return out


def random_positions(ds: Dataset, rows: np.ndarray, count: int, steps: int, rng: np.random.Generator) -> np.ndarray:
    """``[R, count, S]``: uniform draws of S distinct valid pool positions (−1 where the pool is too short)."""
    out = np.full((len(rows), count, steps), -1, np.int32)
    for i, r in enumerate(rows):
        valid = np.flatnonzero(ds.pool_ids[r] >= 0)
        if len(valid) >= steps:
            for j in range(count):
                out[i, j] = rng.choice(valid, steps, replace=False)
    return out


def deduplicate(proposals: Sequence[Proposals], existing: Sequence[Sequence[tuple[int, ...]]] | None = None
                ) -> list[list[dict]]:
    """Per query, the candidates left after de-duplication (module docstring), in order of first appearance:
    dicts with ``pointer`` (tuple), ``method``, ``rank`` (−1) and ``temperature`` (NaN). A set already in
    ``existing[i]`` (the query's labelled trajectories, kept as they are) is dropped."""
    rows = proposals[0].picks.shape[0] if proposals else 0
    out = []
    for i in range(rows):
        seen: dict[tuple, dict] = {}
        taken = {tuple(sorted(p)) for p in existing[i]} if existing is not None else set()
        for prop in proposals:
            for j, pointer in enumerate(prop.picks[i].tolist()):
                if pointer[0] < 0:
                    continue
                key = tuple(sorted(pointer))
                if key in taken:
                    continue
                cand = {"pointer": tuple(pointer), "method": prop.method,
                        "rank": int(prop.rank[i, j]) if prop.rank is not None else -1,
                        "temperature": float(prop.temperature) if prop.temperature is not None else float("nan")}
                if key not in seen:
                    seen[key] = cand
                elif PRIORITY[prop.method] > PRIORITY[seen[key]["method"]]:
                    seen[key] = cand
        out.append(list(seen.values()))
    return out


def combine(ds: Dataset, rows: np.ndarray, candidates: Sequence[Sequence[dict]], labels: dict[str, np.ndarray],
            mode: str = "replace", source: str = "generated data", slots: int | None = None) -> Dataset:
    """``ds`` with the queries ``rows`` given the labelled ``candidates`` (per row, as :func:`deduplicate`
    returns them; ``labels[name]`` float arrays over all candidates in that order): ``replace`` drops the rows'
    own trajectories, ``merge`` keeps them first and appends the new ones. Other queries are unchanged.
    ``gen_methods`` becomes :data:`METHODS` followed by the data's other names; ``gen_rank`` and
    ``gen_temperature`` record the generation.

    ``slots`` is M, the trajectory slots per query (default: the most any query holds). A bound that does not
    depend on what de-duplication kept (:func:`slots_for`) gives every selector's data the same shapes, so the
    runs trained on them share one compiled program."""
    if mode not in COMBINE_MODES:
        raise ConfigError(f"round data mode {mode!r} is not one of {', '.join(COMBINE_MODES)}")
    names = list(METHODS) + [m for m in ds.gen_methods if m not in METHODS]
    recode = np.array([names.index(m) for m in ds.gen_methods], np.int8)
    q, s = ds.num_queries, ds.num_steps
    keep_old = np.ones(q, bool)
    if mode == "replace":
        keep_old[rows] = False
    old_sizes = np.where(keep_old, ds.group_sizes, 0)
    new_sizes = np.zeros(q, np.int64)
    new_sizes[rows] = [len(c) for c in candidates]
    m = int(max((old_sizes + new_sizes).max(), 1))
    if slots is not None:
        if slots < m:
            raise DataError(f"{source}: {m} trajectories for one query do not fit {slots} slots")
        m = slots
    traj = np.full((q, m, s), -1, np.int32)
    lab = {k: np.full((q, m), np.nan, np.float32) for k in ("acc", "correct", "gt_prob", "rel")}
    method = np.full((q, m), -1, np.int8)
    rank = np.full((q, m), -1, np.int16)
    temp = np.full((q, m), np.nan, np.float32)
    for r in np.flatnonzero(keep_old):  # the queries' own trajectories (in their order: padding is last)
        n = old_sizes[r]
        traj[r, :n] = ds.traj[r, :n]
        for k in lab:
            lab[k][r, :n] = getattr(ds, k)[r, :n]
        method[r, :n] = recode[ds.gen_method[r, :n]]
        if ds.gen_rank is not None:
            rank[r, :n] = ds.gen_rank[r, :n]
        if ds.gen_temperature is not None:
            temp[r, :n] = ds.gen_temperature[r, :n]
    flat = 0
    for r, cands in zip(rows, candidates):
        start = old_sizes[r]
        for j, c in enumerate(cands):
            traj[r, start + j] = c["pointer"]
            for k in lab:
                lab[k][r, start + j] = labels[k][flat]
            method[r, start + j] = names.index(c["method"])
            rank[r, start + j] = c["rank"]
            temp[r, start + j] = c["temperature"]
            flat += 1
    pad = traj[..., 0] < 0
    for k in ("acc", "correct"):
        lab[k][pad] = 0.0
    new = dataclasses.replace(ds, traj=traj, gen_method=method, gen_methods=tuple(names), gen_rank=rank,
                              gen_temperature=temp, **lab)
    return dataset_from_arrays(dataset_to_arrays(new), source=source)


def slots_for(ds: Dataset, mix: Mix, mode: str) -> int:
    """The trajectory slots (M) that any generation with ``mix`` on ``ds`` fits in, whatever it keeps: the
    data's own M plus the mix's candidates (``merge``), or the larger of the two (``replace``)."""
    return ds.max_trajectories + mix.total if mode == "merge" else max(ds.max_trajectories, mix.total)


def prompts_of(ds: Dataset, rows: np.ndarray, candidates: Sequence[Sequence[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """The prompts of every candidate: query rows ``[B]`` and demonstration rows ``[B, S]`` (rows of ``emb``, in
    the trajectory's order, which is the prompt's order)."""
    qs, ds_rows = [], []
    for r, cands in zip(rows, candidates):
        for c in cands:
            qs.append(int(ds.query_ids[r]))
            ds_rows.append([int(ds.pool_ids[r, p]) for p in c["pointer"]])
    return np.array(qs, np.int64), np.array(ds_rows, np.int64).reshape(len(qs), ds.num_steps)


def schema_labels(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A scorer's labels in the schema's terms: ``correct`` becomes 0/1 (an exact scorer's probability of a
    non-zero score counts as correct from 0.5: the likelier outcome); a missing ``acc`` is an error."""
    acc = np.asarray(scores["acc"], np.float32)
    if np.isnan(acc).any():
        i = int(np.flatnonzero(np.isnan(acc))[0])
        raise DataError(f"the scorer gave no accuracy for prompt {i}: every candidate needs one")
    correct = np.asarray(scores["correct"], np.float32)
    correct = np.where(np.isnan(correct), acc > 0, correct >= 0.5).astype(np.float32)
    return {"acc": acc, "correct": correct, "gt_prob": np.asarray(scores["gt_prob"], np.float32),
            "rel": np.asarray(scores["rel"], np.float32)}
