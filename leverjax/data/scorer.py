"""Scorers: what a VLM makes of a prompt, per (query, ordered demonstrations).

A scorer takes query rows ``[B]`` and ordered demonstration rows ``[B, n]`` (rows of the data set's
``emb``; the prompt shows the demonstrations in that order, then the query) and returns, per prompt, the
labels the RL data carries (float32 ``[B]`` each; NaN where a scorer does not give a label):

=============  ========================================================================================
``acc``        VQA accuracy of the answer, in [0, 1]
``correct``    1 if ``acc`` > 0 (an exact scorer: the probability that it is)
``gt_prob``    teacher-forced probability mass of the ground-truth answers (the oracle: the model's
               success probability)
``rel``        max(token F1, edit similarity) of the answer to the ground truth
=============  ========================================================================================

Backends:

* :class:`OracleScorer` (here): the simulator's ground truth, ``exact`` (the expected accuracy) or
  ``realised`` (the one answer a VLM gives, drawn from the prompt: what a real evaluation sees).
* ``leverjax.tools.qwen_scorer.QwenScorer``: Qwen2.5-VL through transformers, the original's prompt and
  generation (at the edge: it needs torch).

:class:`PromptCache` wraps either: it keys every prompt by (query, ordered demonstrations), so runs and
seeds that pick the same demonstrations cost one backend call, and (given a file) keeps every scored
prompt on disk as it is scored, so a killed evaluation resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Mapping, Protocol, Sequence

import numpy as np

from leverjax.errors import ConfigError, DataError
from leverjax.fileio import dumps_strict

LABELS = ("acc", "correct", "gt_prob", "rel")
ORACLE_MODES = ("exact", "realised")


class Backend(Protocol):
    """What :class:`PromptCache` calls: ``identity`` (a JSON-able dict naming everything that determines the
    scores: a cache written by another identity is refused) and ``score_batch``."""

    identity: dict

    def score_batch(self, query_rows: np.ndarray, demo_rows: Sequence[Sequence[int]]) -> list[dict]:
        """One dict per prompt: the :data:`LABELS` (float, NaN when not given) and optionally ``answer``."""
        ...


def check_prompts(query_rows, demo_rows, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(query_rows [B], demo_rows [B, n])`` as int64, or a :class:`DataError` naming the first bad entry."""
    q = np.asarray(query_rows)
    d = np.asarray(demo_rows)
    if q.ndim != 1 or d.ndim != 2 or d.shape[0] != q.shape[0]:
        raise DataError(f"prompts need query rows [B] and demonstration rows [B, n]; got {q.shape} and {d.shape}")
    if not (np.issubdtype(q.dtype, np.integer) and np.issubdtype(d.dtype, np.integer)):
        raise DataError(f"prompt rows must be integers; got {q.dtype} and {d.dtype}")
    for name, a in (("query", q), ("demonstration", d)):
        bad = (a < 0) | (a >= num_rows)
        if bad.any():
            i = np.argwhere(bad)[0]
            raise DataError(f"{name} row {int(a[tuple(i)])} (prompt {int(i[0])}) is outside the data's "
                            f"{num_rows} rows")
    return q.astype(np.int64), d.astype(np.int64)


class OracleScorer:
    """The simulator's ground truth as a scorer (data with ``oracle_*`` keys, :mod:`leverjax.data.synth`).

    ``exact``: ``acc`` is the expected VQA accuracy (:func:`~leverjax.data.synth.oracle_accuracy_np`),
    ``correct`` the probability of a non-zero score. ``realised``: ``acc`` is the one answer's score
    (:func:`~leverjax.data.synth.realised_accuracy_np`), ``correct`` = ``acc`` > 0. Both: ``gt_prob`` is the
    success probability of the answer model; ``rel`` is not modelled (NaN, which rewards count as 0)."""

    def __init__(self, oracle: Mapping[str, np.ndarray], num_rows: int, mode: str = "exact", *, source: str = ""):
        from leverjax.data import synth

        if mode not in ORACLE_MODES:
            raise ConfigError(f"oracle mode {mode!r} is not one of {', '.join(ORACLE_MODES)}")
        if not oracle:
            raise DataError(f"{source or 'the data'} has no ground truth (no oracle_* arrays): the oracle scorer "
                            "works on the simulator's data only")
        if mode == "realised" and not synth.has_realised(oracle):
            raise DataError(f"{source or 'the data'} has no answer seed (generator version < 4): it gives exact "
                            "oracle scores only; regenerate it for realised ones")
        self.oracle = {k: np.asarray(v) for k, v in oracle.items()}
        self.num_rows = num_rows
        self.mode = mode
        self._synth = synth
        self.identity = {"scorer": f"oracle-{mode}", "data": source}

    @classmethod
    def for_dataset(cls, dataset, mode: str = "exact", source: str = "") -> "OracleScorer":
        return cls(dataset.oracle, dataset.emb.shape[0], mode, source=source)

    def score(self, query_rows, demo_rows) -> dict[str, np.ndarray]:
        """The labels of every prompt (module docstring), float32 [B] each."""
        q, d = check_prompts(query_rows, demo_rows, self.num_rows)
        synth = self._synth
        p, main, alt, rate = synth._answer_model(np, self.oracle, q, d)
        if self.mode == "exact":
            acc = synth.oracle_accuracy_np(self.oracle, q, d)
            correct = p + (1.0 - p) * rate
        else:
            acc = synth.realised_accuracy_np(self.oracle, q, d)
            correct = (acc > 0).astype(np.float32)
        return {"acc": acc.astype(np.float32), "correct": np.asarray(correct, np.float32),
                "gt_prob": np.asarray(p, np.float32), "rel": np.full(q.shape, np.nan, np.float32)}

    def score_batch(self, query_rows, demo_rows) -> list[dict]:
        out = self.score(np.asarray(query_rows), np.asarray(demo_rows))
        return [{k: float(out[k][i]) for k in LABELS} for i in range(len(query_rows))]


def prompt_key(query_row: int, demo_rows: Sequence[int]) -> str:
    """The cache key of one prompt: ``"q|d1,d2,..."`` (order matters: it is the prompt's order)."""
    return f"{int(query_row)}|{','.join(str(int(d)) for d in demo_rows)}"


class PromptCache:
    """Scores prompts through ``backend`` once each (module docstring).

    ``path``: a JSON-lines file, first line the backend's identity, then one line per scored prompt
    (``{"key", labels..., "answer"}``), appended and flushed batch by batch. A cache written by another
    identity is refused; a last line cut short by a kill is dropped. Counters: ``requests`` (prompts asked
    for), ``calls`` (prompts the backend scored in this session: each new prompt once), ``hits`` (the rest:
    answered from the cache, on disk or from an earlier request, or repeated within a request).
    """

    def __init__(self, backend: Backend, path: str | None = None, *, batch_size: int = 64):
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        self.backend = backend
        self.path = path
        self.batch_size = batch_size
        self.entries: dict[str, dict] = {}
        self.requests = self.hits = self.calls = 0
        if path:
            self._load(path)

    def _load(self, path: str) -> None:
        identity = json.loads(dumps_strict(self.backend.identity))
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(dumps_strict({"identity": identity}) + "\n")
            return
        with open(path, encoding="utf-8") as f:
            text = f.read()
        lines = text.split("\n")
        partial = lines.pop()  # "" when the file ends with a newline, else a line cut short by a kill
        try:
            head = json.loads(lines[0])["identity"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise DataError(f"{path} is not a leverjax prompt cache (its first line names no scorer)") from None
        if head != identity:
            raise DataError(f"the prompt cache {path} was written by another scorer ({_describe(head)}; this one is "
                            f"{_describe(identity)}): give another --cache or remove it")
        for lineno, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
                self.entries[entry["key"]] = entry
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path} line {lineno} is not a cache entry: the cache is damaged") from None
        if partial:
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")


    def score(self, query_rows, demo_rows, *, progress: Callable[[int, int], None] | None = None
              ) -> dict[str, np.ndarray]:
        """The labels of prompts ``query_rows [B]`` × ``demo_rows [B, n]`` (:meth:`score_prompts`)."""
        return self.score_prompts(list(zip(np.asarray(query_rows).tolist(), np.asarray(demo_rows).tolist())),
                                  progress=progress)

    def score_prompts(self, prompts: Sequence[tuple[int, Sequence[int]]], *,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """The labels (float32 [B] each) and ``answer`` (str [B], '' if the backend gives none) of ``prompts``
        (query row, ordered demonstration rows; any number of demonstrations), each new prompt scored once."""
        keys = [prompt_key(q, d) for q, d in prompts]
        todo: dict[str, tuple[int, list[int]]] = {}
        for k, (q, d) in zip(keys, prompts):
            if k not in self.entries and k not in todo:
                todo[k] = (int(q), [int(x) for x in d])
        self.requests += len(keys)
        self.hits += len(keys) - len(todo)
        self._compute(list(todo.values()), progress)
        out = {name: np.array([_label(self.entries[k].get(name)) for k in keys], np.float32) for name in LABELS}
        out["answer"] = np.array([self.entries[k].get("answer", "") for k in keys], dtype=object)
        return out

    def _compute(self, prompts: list[tuple[int, list[int]]], progress) -> None:
        """Scores new ``prompts`` in batches of prompts with the same number of demonstrations."""
        by_len: dict[int, list] = {}
        for q, d in prompts:
            by_len.setdefault(len(d), []).append((q, d))
        done = 0
        for group in by_len.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start:start + self.batch_size]
                results = self.backend.score_batch(np.array([q for q, _ in chunk]), np.array([d for _, d in chunk]))
                if len(results) != len(chunk):
                    raise DataError(f"the scorer returned {len(results)} results for {len(chunk)} prompts")
                self._append([{"key": prompt_key(q, d), **{k: _json_label(r.get(k)) for k in LABELS},
                               **({"answer": r["answer"]} if "answer" in r else {})}
                              for (q, d), r in zip(chunk, results)])
                self.calls += len(chunk)
                done += len(chunk)
                if progress:
                    progress(done, len(prompts))

    def _append(self, new: list[dict]) -> None:
        for entry in new:
            self.entries[entry["key"]] = entry
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(dumps_strict(e) + "\n" for e in new))
                f.flush()
                os.fsync(f.fileno())

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.requests if self.requests else None


def _label(value) -> float:
    return math.nan if value is None else float(value)


def _json_label(value) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _describe(identity: Mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in identity.items())
