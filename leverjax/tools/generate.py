"""``python -m leverjax.data.generate``: new RL data from a trained selector, labelled by a scorer.

    python -m leverjax.data.generate --checkpoint=results/rce --scorer=oracle --out=round2.npz

``--checkpoint`` is a results directory of ``run.py`` (``--run`` picks a finished run, ``--params`` its final or
best-epoch parameters), a leverjax parameter folder, or an original ``.pt``/``.ckpt``. ``--data`` is the data to
generate for (default: the one the results directory trained on). Every query of ``--splits`` (default train)
gets new candidates with ``--mix`` (default the original's v4 mix), de-duplicated as the original does; the
other queries keep their trajectories. ``--mode=replace`` drops the queries' old trajectories, ``merge`` keeps
them and appends the new ones.

Labels (``--scorer``):

* ``oracle`` / ``oracle_realised``: the simulator's ground truth (exact expected accuracy, or the one answer's
  score); ``correct`` is 1 when a non-zero score is the likelier outcome (exact) or the answer scored (realised);
* ``qwen``: Qwen2.5-VL with the original's prompt (``--model``, ``--examples``; needs torch and transformers);
* ``none`` with ``--rl_json=FILE``: the candidates written as the original's RL JSON without labels, for the
  original's labeller; run the same command again with ``--labels=LABELLED.json`` (the labeller's output) to read
  its labels back (the candidates are the same: generation is seeded).

A prompt cache (``--cache``) scores each distinct prompt once and resumes after a kill.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from leverjax.errors import ConfigError, DataError
from leverjax.fileio import write_json_atomic

SCORERS = ("oracle", "oracle_realised", "qwen", "none")


@dataclasses.dataclass(frozen=True)
class Options:
    checkpoint: str
    out: str | None = None
    data: str | None = None
    run: int = 0
    params: str = "final"
    mix: str = ""
    mode: str = "replace"
    splits: tuple[str, ...] = ("train",)
    seed: int = 0
    scorer: str = "oracle"
    labels: str | None = None
    rl_json: str | None = None
    cache: str | None = None
    batch_size: int = 8
    model: str | None = None
    examples: str | None = None
    device: str = "auto"
    dtype: str = "auto"


def check_options(o: Options) -> None:
    if o.scorer not in SCORERS:
        raise ConfigError(f"--scorer={o.scorer} is not one of {', '.join(SCORERS)}")
    if o.labels and o.scorer not in ("oracle", "none"):
        raise ConfigError("--labels reads the labels from a file: give no --scorer with it")
    if o.scorer == "none" and not o.labels and not o.rl_json:
        raise ConfigError("--scorer=none writes the unlabelled candidates: give --rl_json=FILE (then --labels to "
                          "read the labeller's output back)")
    if not o.out and not (o.scorer == "none" and not o.labels):
        raise ConfigError("give --out=FILE.npz for the generated data")
    if o.out and not o.out.endswith(".npz"):
        raise ConfigError(f"--out={o.out} must name an .npz file")
    if o.scorer == "qwen" and not (o.model and o.examples):
        raise ConfigError("--scorer=qwen needs --model (a Qwen2.5-VL directory) and --examples (the exporter's "
                          "examples file with each example's answers)")


def load_selector(o: Options):
    """``(Selector, params, data path)`` of the checkpoint (any kind :func:`leverjax.tools.score.load_for_scoring`
    reads), and the data it trained on when it is a results directory."""
    from leverjax.core.model import Selector
    from leverjax.tools.score import load_for_scoring

    params, sc, _ = load_for_scoring(o.checkpoint, run_index=o.run, params=o.params)
    trained_on = None
    if os.path.isfile(os.path.join(o.checkpoint, "grid.json")):
        from leverjax.tools.vlm_eval import data_path

        trained_on = data_path(o.checkpoint, None) if not o.data else None
        if o.data:  # a results directory and another data file: the pools must be alike
            _check_pool_size(o.checkpoint, o.data)
    return Selector(sc), params, o.data or trained_on


def _check_pool_size(results: str, data: str) -> None:
    """A selector trained on pools of K candidates generates for data whose pools have the same K."""
    from leverjax.data.npz import read_npz_arrays
    from leverjax.fileio import read_json

    recorded = ((read_json(os.path.join(results, "grid.json")) or {}).get("provenance") or {}).get("data") or []
    path = recorded[0].get("path") if recorded else None
    if not path or not os.path.isfile(path):
        return
    k_trained = read_npz_arrays(path)["pool_ids"].shape[1]
    k_data = read_npz_arrays(data)["pool_ids"].shape[1]
    if k_trained != k_data:
        raise DataError(f"the selector of {results} was trained on pools of K={k_trained} candidates but {data} has "
                        f"K={k_data}: generate for data with the pools it was trained on")


def make_scorer(o: Options, dataset, data_file: str):
    """The labeller: a :class:`~leverjax.data.scorer.PromptCache` around the chosen backend (or ``None``)."""
    from leverjax.data.scorer import OracleScorer, PromptCache

    if o.labels:
        from leverjax.data.leverplus import RLJsonLabels

        return RLJsonLabels(o.labels)
    if o.scorer == "none":
        return None
    if o.scorer.startswith("oracle"):
        mode = "realised" if o.scorer == "oracle_realised" else "exact"
        backend = OracleScorer.for_dataset(dataset, mode, source=os.path.basename(data_file))
        return PromptCache(backend, o.cache, batch_size=4096)
    from leverjax.tools import examples as examples_lib
    from leverjax.tools.qwen_scorer import QwenScorer

    examples = examples_lib.load_examples(o.examples, answers=True)
    if len(examples) != dataset.emb.shape[0]:
        raise DataError(f"{o.examples} holds {len(examples)} examples but the data has {dataset.emb.shape[0]} rows")
    # RL data carries the ground truth's probability (the original's vqa_gt_prob) besides the accuracy
    backend = QwenScorer(o.model, examples, device=o.device, dtype=o.dtype, gt_prob=True)
    return PromptCache(backend, o.cache or os.path.splitext(o.out)[0] + ".prompt_cache.jsonl",
                       batch_size=o.batch_size)


class _Unlabelled:
    """A stand-in labeller for ``--scorer=none``: labels 0 that are never written (only the JSON without labels is)."""

    calls = 0

    def score(self, query_rows, demo_rows):
        n = len(query_rows)
        return {"acc": np.zeros(n, np.float32), "correct": np.zeros(n, np.float32),
                "gt_prob": np.full(n, np.nan, np.float32), "rel": np.full(n, np.nan, np.float32)}


def generate(o: Options) -> dict:
    """Runs the command (module docstring); returns its summary (also written beside ``--out``)."""
    from leverjax.data import candidates as cand_lib
    from leverjax.data.leverplus import to_rl_data
    from leverjax.data.npz import load_npz, save_npz
    from leverjax.data.synth import load_or_make_default
    from leverjax.fileio import dumps_strict, write_text_atomic
    from leverjax.run import generation

    check_options(o)
    mix = cand_lib.parse_mix(o.mix or cand_lib.ORIGINAL_MIX)
    selector, params, data_file = load_selector(o)
    dataset = load_npz(data_file) if data_file else load_or_make_default()
    data_file = data_file or "built-in synthetic set"
    rows = generation.query_rows(dataset, o.splits)
    scorer = make_scorer(o, dataset, data_file)
    result = generation.generate(selector, params, dataset, scorer or _Unlabelled(), mix=mix, rows=rows,
                                 mode=o.mode, seed=o.seed, source=o.out or "generated data")
    summary = {"checkpoint": os.path.abspath(o.checkpoint), "run": o.run, "params": o.params,
               "data": data_file, "mix": mix.text(), "mode": o.mode, "splits": list(o.splits), "seed": o.seed,
               "scorer": "rl-json" if o.labels else o.scorer, **result.summary()}
    if scorer is None:
        rl = to_rl_data(result.dataset, splits=o.splits, labels=False)
        write_text_atomic(o.rl_json, dumps_strict(rl))
        summary["rl_json"] = os.path.abspath(o.rl_json)
        print(f"wrote {o.rl_json}: {result.prompts} unlabelled candidates of {len(rows)} queries for the "
              f"original's labeller; read its output back with --labels=FILE")
        return summary
    ds = dataclasses.replace(result.dataset, meta={**dataset.meta, "generated": summary})
    save_npz(ds, o.out)
    write_json_atomic(os.path.splitext(o.out)[0] + ".generate.json", summary)
    kept = ", ".join(f"{k} {v}" for k, v in result.kept.items() if v)
    print(f"wrote {o.out}: {len(rows)} queries got {result.prompts} candidates ({kept}); "
          f"{result.scorer_calls} scorer calls; {ds.num_queries} queries, M={ds.max_trajectories}")
    if o.rl_json:
        write_text_atomic(o.rl_json, dumps_strict(to_rl_data(ds, splits=o.splits, labels=True)))
    return summary


def define_flags(flags) -> None:
    from leverjax.data.candidates import COMBINE_MODES, ORIGINAL_MIX

    flags.DEFINE_string("checkpoint", None, "the selector: a results directory of run.py, a leverjax parameter "
                        "folder or an original .pt/.ckpt")
    flags.DEFINE_integer("run", 0, "the run of a results directory (finished runs in grid.json's order) or of a "
                         "vmapped parameter folder")
    flags.DEFINE_enum("params", "final", ["final", "best"], "a results directory's final or best-epoch parameters")
    flags.DEFINE_string("data", None, "the data to generate for (default: the data the results directory trained on; "
                        "the built-in synthetic set for a bare checkpoint)")
    flags.DEFINE_string("out", None, "the generated data (.npz); a summary goes beside it (.generate.json)")
    flags.DEFINE_string("mix", ORIGINAL_MIX, "candidates per query and method before de-duplication")
    flags.DEFINE_enum("mode", "replace", list(COMBINE_MODES), "replace the queries' trajectories, or merge the new "
                      "ones with them")
    flags.DEFINE_list("splits", ["train"], "the queries that get new candidates")
    flags.DEFINE_integer("seed", 0, "seed of the samples and random candidates")
    flags.DEFINE_enum("scorer", "oracle", list(SCORERS), "the labeller (module docstring)")
    flags.DEFINE_string("labels", None, "read the labels from the original labeller's RL JSON output")
    flags.DEFINE_string("rl_json", None, "also write the candidates as the original's RL JSON (without labels with "
                        "--scorer=none)")
    flags.DEFINE_string("cache", None, "prompt cache file (resumes a killed labelling)")
    flags.DEFINE_integer("batch_size", 8, "qwen: prompts per VLM batch")
    flags.DEFINE_string("model", None, "qwen: local Qwen2.5-VL directory")
    flags.DEFINE_string("examples", None, "qwen: the exporter's examples file, each record with its 'answers'")
    flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "qwen: device")
    flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16", "float16"], "qwen: weights' dtype")


def options_from_flags(v) -> Options:
    if not v.checkpoint:
        raise ConfigError("give --checkpoint (a results directory, a parameter folder or an original .pt)")
    return Options(checkpoint=v.checkpoint, out=v.out, data=v.data, run=v.run, params=v.params, mix=v.mix,
                   mode=v.mode, splits=tuple(v.splits), seed=v.seed, scorer=v.scorer, labels=v.labels,
                   rl_json=v.rl_json, cache=v.cache, batch_size=v.batch_size, model=v.model, examples=v.examples,
                   device=v.device, dtype=v.dtype)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    generate(options_from_flags(flags.FLAGS))


def _cli() -> None:
    from absl import flags

    from leverjax.command import run

    define_flags(flags)
    run(main, command="python -m leverjax.data.generate", about="New RL data from a trained selector: the "
        "original's candidate mix, labelled by a scorer (or written for the original's labeller).")


if __name__ == "__main__":
    _cli()
