"""VLM evaluation of a whole grid: every run × seed's selections scored by a scorer, with paired statistics.

    python -m leverjax.vlm_eval --results=DIR --scorer=oracle --out=OUT
    python -m leverjax.vlm_eval --results=DIR --scorer=qwen --model=QWEN_DIR --examples=EXAMPLES.json --out=OUT

For every finished run of the results directory (its ``final/`` or, with ``--params=best``, its best-epoch
parameters), the selector's greedy n-shot selection of every evaluation question (the final split's queries
with a labelled trajectory, or a seeded subset of ``--questions`` of them, the same for every run) is
computed exactly as the training's own final evaluation decodes it, for every n in ``--shots``. The
reference selections are scored beside them: random demonstrations from the whole training set (the
original's RandomRetriever: one draw per question and seed) and similarity retrieval (the n pool candidates
nearest the query).

Scorers (:mod:`leverjax.data.scorer`): ``oracle`` (the simulator's exact expected accuracy: the numbers equal
the grid's own ``test_oracle_acc_n``), ``oracle_realised`` (the one answer a VLM gives) and ``qwen``
(Qwen2.5-VL with the original's prompt and generation, :mod:`leverjax.tools.qwen_scorer`). Every prompt is
scored once: runs and seeds that pick the same demonstrations share one scorer call, and the ``qwen``
scorer's prompts are kept in ``--cache`` as they are scored, so a killed evaluation resumes where it stopped.

Writes ``OUT/summary.json`` (per run, seed and shot the mean accuracy; per variant and shot the mean with its
95% interval over seeds and questions; paired differences to ``--baseline`` with their interval, the exact
McNemar test when there is one seed, and the smallest detectable effect; the cache's counts),
``OUT/questions.csv`` (every scored question: run, shot, query, demonstrations, accuracy, answer) and
``OUT/report.md``.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from typing import Sequence

import numpy as np

from leverjax.errors import ConfigError, DataError
from leverjax.fileio import atomic_path, file_sha256, read_json, write_json_atomic, write_text_atomic

PARAMS = ("final", "best")
SCORERS = ("oracle", "oracle_realised", "qwen")
REFERENCES = ("random_all", "similarity")


@dataclasses.dataclass
class Selections:
    """One run's (or reference's) selections: ``picks[n]`` global rows [Q, n] of the evaluation questions."""

    name: str
    variant: str
    seed: int
    picks: dict[int, np.ndarray]
    reference: bool = False


@dataclasses.dataclass
class Options:
    results: str | None
    out: str
    checkpoint: str | None = None
    run: int = 0
    data: str | None = None
    params: str = "final"
    shots: tuple[int, ...] = (1, 2, 3, 4)
    questions: int = 0
    questions_seed: int = 0
    scorer: str = "oracle"
    baseline: str | None = None
    references: tuple[str, ...] = REFERENCES
    cache: str | None = None
    batch_size: int = 8
    resamples: int = 2000
    model: str | None = None
    examples: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    num_beams: int = 3
    max_new_tokens: int = 5
    progress: bool = True


def check_options(o: Options) -> None:
    if bool(o.results) == bool(o.checkpoint):
        raise ConfigError("give --results (a results directory) or --checkpoint (one selector), not both or neither")
    if o.checkpoint and not o.data:
        raise ConfigError("--checkpoint needs --data (the .npz whose questions it selects for)")
    if o.params not in PARAMS:
        raise ConfigError(f"--params={o.params} is not one of {', '.join(PARAMS)}")
    if o.scorer not in SCORERS:
        raise ConfigError(f"--scorer={o.scorer} is not one of {', '.join(SCORERS)}")
    if not o.shots or min(o.shots) < 1:
        raise ConfigError(f"--shots={','.join(map(str, o.shots))} must list shot counts of at least 1")
    if o.questions < 0:
        raise ConfigError(f"--questions={o.questions} must be 0 (all) or positive")
    for r in o.references:
        if r not in REFERENCES:
            raise ConfigError(f"--references: {r!r} is not one of {', '.join(REFERENCES)}")
    if o.scorer == "qwen":
        if not (o.model and o.examples):
            raise ConfigError("--scorer=qwen needs --model (a local Qwen2.5-VL directory) and --examples (the "
                              "exporter's examples file with each example's answers)")
        if not os.path.isdir(o.model):
            raise ConfigError(f"--model={o.model}: no such directory (a local Qwen2.5-VL directory)")
        if not os.path.isfile(o.examples):
            raise ConfigError(f"--examples={o.examples}: no such file (the exporter's examples file)")
    if o.resamples < 100:
        raise ConfigError(f"--resamples={o.resamples} must be at least 100")


# -- the grid's selections -------------------------------------------------------------------------------------


def _grid(results: str) -> dict:
    grid = read_json(os.path.join(results, "grid.json"))
    if not isinstance(grid, dict):
        raise DataError(f"{results} is not a leverjax results directory (no readable grid.json)")
    return grid


def data_path(results: str, given: str | None) -> str:
    """The data the grid trained on (``grid.json``'s provenance), or ``given`` if its hash matches."""
    recorded = (_grid(results).get("provenance") or {}).get("data") or []
    if len(recorded) > 1:
        raise ConfigError(f"{results} trained on {len(recorded)} data files; the VLM evaluation takes a grid on "
                          "one (evaluate each data file's runs from a grid of their own)")
    recorded = recorded[0] if recorded else {}
    path = given or recorded.get("path")
    if not path:
        raise ConfigError(f"{results}/grid.json names no data file: give --data")
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist" + ("" if given else f" (named by {results}/grid.json; "
                                                                             "give --data)"))
    if recorded.get("sha256") and file_sha256(path) != recorded["sha256"]:
        raise DataError(f"{path} is not the data {results} trained on (its SHA-256 differs from grid.json's)")
    return path


def finished_groups(results: str, params: str) -> list[tuple[str, dict]]:
    """``(params folder, results.json)`` of every group with finished runs."""
    runs_dir = os.path.join(results, "runs")
    out = []
    for group in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        content = read_json(os.path.join(runs_dir, group, "results.json"))
        if not content or not content.get("runs"):
            continue
        folder = os.path.join(runs_dir, group, params)
        if not os.path.isdir(folder):
            hint = " (trained before leverjax kept final parameters: use --params=best)" if params == "final" else ""
            raise DataError(f"group {group} of {results} has no {params}/ parameters{hint}")
        out.append((folder, content))
    if not out:
        raise DataError(f"{results} has no finished runs (no runs/<group>/results.json with final metrics)")
    return out


def evaluation_rows(dataset) -> tuple[str, np.ndarray]:
    """The final split (test, else val: the training's final evaluation's) and its evaluation query rows."""
    from leverjax.core.baselines import evaluation_queries

    for split in ("test", "val"):
        rows = evaluation_queries(dataset, split)
        if len(rows):
            return split, rows
    raise DataError("the data has no val or test query with a labelled trajectory to evaluate")


def choose_questions(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """All ``rows`` (n = 0) or a seeded subset of n of them, sorted; the same for every run."""
    if n > len(rows):
        raise ConfigError(f"--questions={n} exceeds the {len(rows)} evaluation questions")
    return np.sort(rows if n == 0 else np.random.default_rng(seed).choice(rows, n, replace=False))


def grid_selections(folder: str, content: dict, dataset, questions: np.ndarray, shots: Sequence[int]
                    ) -> list[Selections]:
    """The selections of every run of one group (a params folder of stacked runs)."""
    import jax

    from leverjax.core import config as config_lib
    from leverjax.core.evaluate import selections
    from leverjax.core.train import Pipeline
    from leverjax.data.device import DeviceData
    from leverjax.run.checkpoint import load_params

    params, meta = load_params(folder)
    cfg = config_lib.replace(config_lib.Config(), meta.get("config") or {})
    pipe = Pipeline(cfg, dataset)
    split = "test" if len(pipe.split_index["test"]) else "val"
    batches = pipe.eval_batches(split)
    data = DeviceData.from_dataset(dataset)
    fn = jax.jit(jax.vmap(lambda p: selections(pipe.selector, p, data, batches, num_steps=pipe.num_steps,
                                               shots=shots)))
    picks = {n: np.asarray(v) for n, v in fn(params).items()}
    order = np.asarray(batches).reshape(-1)
    where = {int(r): i for i, r in enumerate(order) if r >= 0}
    take = np.array([where[int(q)] for q in questions])
    info = {r["name"]: r for r in content["runs"] if r.get("final") and not r.get("failure")}
    out = []
    for j, run in enumerate(meta.get("runs") or []):
        if run["name"] not in info:  # not finished (a diverged run has no final metrics)
            continue
        out.append(Selections(run["name"], info[run["name"]].get("variant", run["name"].split("/")[0]),
                              int(run["seed"]), {n: picks[n][j][take] for n in shots}))
    return out


def checkpoint_selections(checkpoint: str, run: int, dataset, questions: np.ndarray, shots: Sequence[int]
                          ) -> list[Selections]:
    """The selections of one selector: a leverjax parameter folder (``--run`` picks a run of a vmapped one)
    or an original ``.pt``/``.ckpt`` (:mod:`leverjax.tools.interop`), decoded as the evaluation decodes."""
    import jax
    import jax.numpy as jnp

    from leverjax.core.evaluate import selections
    from leverjax.core.model import Selector
    from leverjax.data.device import DeviceData, padded_batches
    from leverjax.tools.score import load_for_scoring

    params, sc, cfg = load_for_scoring(checkpoint, run_index=run)
    if dataset.dim != cfg["dim"]:
        raise DataError(f"the data has embeddings of width d={dataset.dim} but {checkpoint} takes d={cfg['dim']}")
    batches = padded_batches(jnp.asarray(questions, jnp.int32), max(1, min(256, len(questions))))
    picks = jax.jit(lambda p: selections(Selector(sc), p, DeviceData.from_dataset(dataset), batches,
                                         num_steps=int(dataset.traj.shape[-1]), shots=shots))(params)
    name = os.path.basename(os.path.normpath(checkpoint))
    return [Selections(f"{name}/seed={run}", name, run, {n: np.asarray(v)[:len(questions)] for n, v in picks.items()})]


def reference_selections(dataset, questions: np.ndarray, shots: Sequence[int], seeds: Sequence[int],
                         names: Sequence[str]) -> list[Selections]:
    """Random demonstrations from the whole candidate set, every row of ``emb`` but the query's (one draw per
    question and seed, as the original's RandomRetriever draws from its training set), and similarity
    retrieval (the same for every seed)."""
    from leverjax.core import baselines

    out = []
    num_rows = dataset.emb.shape[0]
    pool_ids = np.asarray(dataset.pool_ids)
    qrows = np.asarray(dataset.query_ids)[questions]
    for name in names:
        for seed in seeds:
            picks = {}
            for n in shots:
                if name == "similarity":
                    rows = [pool_ids[q][baselines.similarity_positions(dataset, int(q), n)] for q in questions]
                else:
                    rng = np.random.default_rng([seed, 1, n])
                    rows = []
                    for qr in qrows:
                        draw = rng.choice(num_rows - 1, n, replace=False)
                        rows.append(draw + (draw >= qr))  # skips the query's own row
                picks[n] = np.asarray(rows, np.int64)
            out.append(Selections(f"{name}/seed={seed}", name, seed, picks, reference=True))
    return out


# -- scoring -----------------------------------------------------------------------------------------------------


def make_scorer(o: Options, dataset, data_file: str):
    """The backend and its prompt cache."""
    from leverjax.data.scorer import OracleScorer, PromptCache

    if o.scorer.startswith("oracle"):
        mode = "realised" if o.scorer == "oracle_realised" else "exact"
        backend = OracleScorer.for_dataset(dataset, mode, source=os.path.basename(data_file))
        return PromptCache(backend, o.cache, batch_size=max(o.batch_size, 4096))
    from leverjax.tools import examples as examples_lib
    from leverjax.tools.qwen_scorer import GenerationOptions, QwenScorer

    examples = examples_lib.load_examples(o.examples, answers=True)
    if len(examples) != dataset.emb.shape[0]:
        raise DataError(f"{o.examples} holds {len(examples)} examples but the data has {dataset.emb.shape[0]} rows "
                        "(row i of the data is example i of the file the exporter read)")
    backend = QwenScorer(o.model, examples, device=o.device, dtype=o.dtype,
                         generation=GenerationOptions(num_beams=o.num_beams, max_new_tokens=o.max_new_tokens))
    return PromptCache(backend, o.cache or os.path.join(o.out, "prompt_cache.jsonl"), batch_size=o.batch_size)


def score_all(cache, selections: list[Selections], questions: np.ndarray, dataset, shots, progress: bool
              ) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """``{(name, n): {"acc": [Q], "answer": [Q]}}``, every unique prompt scored once."""
    qrows = np.asarray(dataset.query_ids)[questions].tolist()
    slots = [(s.name, n) for s in selections for n in shots]
    prompts = [(q, d) for s in selections for n in shots for q, d in zip(qrows, s.picks[n].tolist())]
    bar = _Progress(progress)
    scored = cache.score_prompts(prompts, progress=bar.update)
    bar.close()
    size = len(qrows)
    return {slot: {"acc": scored["acc"][k * size:(k + 1) * size], "answer": scored["answer"][k * size:(k + 1) * size]}
            for k, slot in enumerate(slots)}


class _Progress:
    """Scored prompts on one line of stderr, at most every second."""

    def __init__(self, enabled: bool):
        self.enabled, self.last = enabled and sys.stderr.isatty(), 0.0

    def update(self, done: int, total: int) -> None:
        if self.enabled and (time.perf_counter() - self.last > 1 or done == total):
            self.last = time.perf_counter()
            print(f"\rscoring prompts {done}/{total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


# -- statistics ----------------------------------------------------------------------------------------------


def by_variant(selections: list[Selections]) -> dict[str, list[Selections]]:
    out: dict[str, list[Selections]] = {}
    for s in selections:
        out.setdefault(s.variant, []).append(s)
    return {v: sorted(ss, key=lambda s: s.seed) for v, ss in out.items()}


def statistics(selections: list[Selections], scores, shots, baseline: str | None, resamples: int) -> dict:
    """Per variant and shot: accuracy and its interval; paired Δ to the baseline (all in points, ×100)."""
    from leverjax.report import paired, power

    variants = by_variant(selections)
    if baseline is not None and baseline not in variants:
        raise ConfigError(f"--baseline={baseline} is not a variant of the grid ({', '.join(variants)})")
    out = {"accuracy": {}, "paired": {}}
    for v, ss in variants.items():
        acc = {}
        for n in [*shots, "mean"]:
            x = _matrix(ss, scores, shots, n)
            mean, lo, hi = paired.crossed_bootstrap(x, resamples=resamples)
            acc[str(n)] = {"mean": mean, "low": lo, "high": hi, "seeds": x.shape[0], "questions": x.shape[1]}
        out["accuracy"][v] = acc
    if baseline is None:
        return out
    base = variants[baseline]
    for v, ss in variants.items():
        if v == baseline:
            continue
        common = sorted({s.seed for s in ss} & {s.seed for s in base}) or None
        a = [s for s in ss if common is None or s.seed in common]
        b = [s for s in base if common is None or s.seed in common]
        if len(a) != len(b):  # a reference that is the same in every seed against a variant of several
            a, b = (a * len(b), b) if len(a) == 1 else (a, b * len(a))
        rows = {}
        for n in [*shots, "mean"]:
            d = _matrix(a, scores, shots, n) - _matrix(b, scores, shots, n)
            mean, lo, hi = paired.crossed_bootstrap(d, resamples=resamples)
            comp = power.variance_components(d)
            seed_known = d.shape[0] > 1
            mde = power.minimum_detectable_effect({**comp, "seed": comp["seed"] if seed_known else 0.0},
                                                  d.shape[0], d.shape[1])
            row = {"delta": mean, "low": lo, "high": hi, "seeds": d.shape[0], "questions": d.shape[1],
                   "mde": mde, "mde_includes_seeds": seed_known}
            if d.shape[0] == 1 and n != "mean":
                row["mcnemar"] = paired.mcnemar(_matrix(a, scores, shots, n)[0], _matrix(b, scores, shots, n)[0])
            rows[str(n)] = row
        out["paired"][v] = rows
    return out


def _matrix(ss: list[Selections], scores, shots, n) -> np.ndarray:
    """[S, Q] accuracy in points of the seeds ``ss`` at ``n`` shots ("mean": averaged over ``shots``)."""
    if n == "mean":
        return np.mean([_matrix(ss, scores, shots, m) for m in shots], axis=0)
    return 100.0 * np.array([scores[(s.name, n)]["acc"] for s in ss], np.float64)


# -- the command -------------------------------------------------------------------------------------------------


def evaluate(o: Options) -> dict:
    """Runs the evaluation of ``o`` and writes its files; returns the summary."""
    from leverjax.data import load_npz

    check_options(o)
    t0 = time.perf_counter()
    path = data_path(o.results, o.data) if o.results else o.data
    if not os.path.isfile(path):
        raise DataError(f"data file {path} does not exist")
    dataset = load_npz(path)
    split, rows = evaluation_rows(dataset)
    questions = choose_questions(rows, o.questions, o.questions_seed)
    if o.checkpoint:
        runs = checkpoint_selections(o.checkpoint, o.run, dataset, questions, o.shots)
    else:
        groups = finished_groups(o.results, o.params)
        runs = [s for folder, content in groups for s in grid_selections(folder, content, dataset, questions,
                                                                            o.shots)]
    seeds = sorted({s.seed for s in runs})
    refs = reference_selections(dataset, questions, o.shots, seeds, o.references)
    cache = make_scorer(o, dataset, path)
    scores = score_all(cache, runs + refs, questions, dataset, o.shots, o.progress)
    baseline = o.baseline or ("rce_only" if any(s.variant == "rce_only" for s in runs) else runs[0].variant)
    stats = statistics(runs + refs, scores, o.shots, baseline, o.resamples)
    summary = {
        "results": os.path.abspath(o.results) if o.results else None,
        "checkpoint": os.path.abspath(o.checkpoint) if o.checkpoint else None, "data": os.path.abspath(path),
        "params": o.params if o.results else None,
        "split": split, "questions": len(questions), "questions_seed": o.questions_seed if o.questions else None,
        "shots": list(o.shots), "scorer": cache.backend.identity, "baseline": baseline,
        "runs": [{"name": s.name, "variant": s.variant, "seed": s.seed, "reference": s.reference,
                  "acc": {str(n): float(np.mean(scores[(s.name, n)]["acc"])) for n in o.shots}}
                 for s in runs + refs],
        **stats,
        "cache": {"requests": cache.requests, "hits": cache.hits, "calls": cache.calls,
                  "unique_prompts": len(cache.entries), "hit_rate": cache.hit_rate,
                  "file": os.path.abspath(cache.path) if cache.path else None},
        "seconds": time.perf_counter() - t0,
    }
    if o.scorer == "oracle" and o.results:
        summary["oracle_consistency"] = oracle_consistency(o.results, summary["runs"], o.shots, o.params,
                                                           o.questions)
    os.makedirs(o.out, exist_ok=True)
    write_json_atomic(os.path.join(o.out, "summary.json"), summary)
    write_questions(os.path.join(o.out, "questions.csv"), runs + refs, scores, questions, dataset, o.shots)
    from leverjax.report.vlm import render

    write_text_atomic(os.path.join(o.out, "report.md"), render(summary))
    return summary


def oracle_consistency(results: str, runs: list[dict], shots, params: str, subset: int) -> dict | None:
    """The largest difference between these oracle accuracies and the grid's own final ones (its
    ``summary.json``: ``test_oracle_acc_n`` of the final parameters, ``best_test_...`` of the best)."""
    grid = read_json(os.path.join(results, "summary.json")) or {}
    prefix = "test_" if params == "final" else "best_test_"
    own = {r["run"]: r for r in grid.get("final", []) if isinstance(r, dict) and "run" in r}
    diffs = [abs(r["acc"][str(n)] - own[r["name"]][f"{prefix}oracle_acc_{n}"])
             for r in runs if not r["reference"] and r["name"] in own for n in shots
             if own[r["name"]].get(f"{prefix}oracle_acc_{n}") is not None]
    if not diffs:
        return None
    return {"compared": len(diffs), "max_abs_diff": max(diffs),
            "note": "every evaluation question" if not subset else "a subset of the questions: not comparable"}


def write_questions(path: str, selections, scores, questions, dataset, shots) -> None:
    qids = np.asarray(dataset.query_ids)[questions]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["run", "variant", "seed", "shots", "query", "demonstrations", "acc", "answer"])
        for s in selections:
            for n in shots:
                sc = scores[(s.name, n)]
                for i, q in enumerate(qids.tolist()):
                    w.writerow([s.name, s.variant, s.seed, n, q, " ".join(map(str, s.picks[n][i].tolist())),
                                f"{float(sc['acc'][i]):.4f}", sc["answer"][i]])


def define_flags(flags) -> None:
    flags.DEFINE_string("results", None, "results directory of a grid or experiment (run.py's --out)")
    flags.DEFINE_string("checkpoint", None, "instead of --results: one selector, a leverjax parameter folder or an "
                        "original .pt/.ckpt (with --data)")
    flags.DEFINE_integer("run", 0, "--checkpoint: the run of a vmapped parameter folder")
    flags.DEFINE_string("out", None, "output folder (default: RESULTS/vlm_eval, or vlm_eval/ beside the checkpoint)")
    flags.DEFINE_string("data", None, "the data .npz (default: the one grid.json names; its hash must match)")
    flags.DEFINE_enum("params", "final", PARAMS, "the runs' final or best-epoch parameters")
    flags.DEFINE_list("shots", ["1", "2", "3", "4"], "shot counts to evaluate")
    flags.DEFINE_integer("questions", 0, "a seeded subset of this many evaluation questions, the same for every "
                         "run (0: all)")
    flags.DEFINE_integer("questions_seed", 0, "seed of the --questions subset")
    flags.DEFINE_enum("scorer", "oracle", SCORERS, "oracle: the simulator's exact expected accuracy; "
                      "oracle_realised: its one-answer score; qwen: Qwen2.5-VL (--model, --examples)")
    flags.DEFINE_string("baseline", None, "variant the paired differences are taken to (default rce_only if "
                        "present, else the first)")
    flags.DEFINE_list("references", list(REFERENCES), "reference selections scored beside the runs")
    flags.DEFINE_string("cache", None, "prompt cache file (default OUT/prompt_cache.jsonl for qwen; shared by "
                        "evaluations with the same scorer)")
    flags.DEFINE_integer("batch_size", 8, "prompts per VLM batch")
    flags.DEFINE_integer("resamples", 2000, "bootstrap resamples of the intervals")
    flags.DEFINE_string("model", None, "qwen: local Qwen2.5-VL directory")
    flags.DEFINE_string("examples", None, "qwen: the exporter's examples file, each record with its 'answers'")
    flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "qwen: device")
    flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16", "float16"],
                      "qwen: weights' dtype (auto: bfloat16 on a GPU, float32 on the CPU)")
    flags.DEFINE_integer("num_beams", 3, "qwen: beams (the original's 3)")
    flags.DEFINE_integer("max_new_tokens", 5, "qwen: new tokens at most (the original's 5)")
    flags.DEFINE_bool("progress", True, "show scoring progress on a terminal")


def options_from_flags(v) -> Options:
    if not (v.results or v.checkpoint):
        raise ConfigError("give --results (a results directory of run.py) or --checkpoint with --data")
    default_out = os.path.join(v.results, "vlm_eval") if v.results else \
        os.path.join(os.path.dirname(os.path.abspath(v.checkpoint)), "vlm_eval")
    try:
        shots = tuple(int(s) for s in v.shots)
    except ValueError:
        raise ConfigError(f"--shots={','.join(v.shots)} must be integers") from None
    return Options(results=v.results, checkpoint=v.checkpoint, run=v.run, out=v.out or default_out, data=v.data,
                   params=v.params, shots=shots, questions=v.questions, questions_seed=v.questions_seed,
                   scorer=v.scorer, baseline=v.baseline, references=tuple(v.references), cache=v.cache,
                   batch_size=v.batch_size, resamples=v.resamples, model=v.model, examples=v.examples,
                   device=v.device, dtype=v.dtype, num_beams=v.num_beams, max_new_tokens=v.max_new_tokens,
                   progress=v.progress)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    summary = evaluate(options_from_flags(flags.FLAGS))
    from leverjax.report.vlm import headline

    print(headline(summary))


def _cli() -> None:
    from absl import flags

    from leverjax.command import run

    define_flags(flags)
    run(main, command="python -m leverjax.vlm_eval", about="Scores every run's selections with a VLM scorer "
        "(or the simulator's oracle) and writes accuracies with paired intervals.")


if __name__ == "__main__":
    _cli()
