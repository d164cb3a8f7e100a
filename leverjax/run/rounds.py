"""The data loop's rounds: train, generate new candidates from the trained selector, label them, merge (or
replace), and train again.

An experiment whose config has ``rounds`` = R > 1 runs as R steps, each a grid of its own that resumes like
any other (a killed loop is started again with the same command: finished rounds are skipped, a generated
data file is reused)::

    OUT/round1/                          the experiment's grid (every variant and seed) on its own data
    OUT/round2/data/<variant>/seed=<s>.npz    round 1's selector of that run: new candidates for the training
                                         queries (``round_mix``), labelled by ``round_scorer``, merged with
                                         (``round_data=merge``) or replacing the round's data; a .json beside
                                         it records the generation and its scorer calls
    OUT/round2/<variant>/seed=<s>/       the same run (config, seed) trained again on that data
    ...
    OUT/rounds.json                      every run of every round: its data, final metrics, scorer calls

Each run's next round starts from scratch (a fresh initialisation with the same seed), so a round differs from
the one before only in its data. The validation and test queries keep their trajectories in every round: all
rounds are evaluated on the same questions. The report (:mod:`leverjax.report.rounds`) compares the rounds
paired by seed.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from leverjax.core import config as config_lib
from leverjax.core.model import Selector
from leverjax.data import candidates as cand_lib
from leverjax.data.npz import load_npz, save_npz
from leverjax.data.scorer import OracleScorer, PromptCache
from leverjax.data.synth import default_dataset_path, load_or_make_default
from leverjax.errors import LeverjaxError
from leverjax.fileio import read_json, write_json_atomic
from leverjax.run import generation, launch
from leverjax.run.checkpoint import load_params
from leverjax.run.grid import expand_grid
from leverjax.run.results import finished_results

SCORER_MODES = {"oracle": "exact", "oracle_realised": "realised"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def rounds_of(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
              sweep: Mapping[str, Sequence[Any]] | None = None) -> int:
    """The largest ``rounds`` among the runs of the grid ``names`` × ``sweep`` with ``overrides``."""
    grid = expand_grid(names, overrides, sweep, seeds=1)
    return max((r.config.rounds for r in grid.runs if r.config is not None), default=1)


def _final(record: dict) -> dict:
    return {k: v for k, v in (record.get("final") or {}).items() if not k.startswith("best_")}


def _run_params(root: str, status: dict, name: str):
    """The final parameters of run ``name`` (one run of its group's stacked folder)."""
    folder = os.path.join(root, status["directory"], "final")
    params, meta = load_params(folder)
    names = [r["name"] for r in meta.get("runs") or []]
    if name not in names:
        raise LeverjaxError(f"{folder} holds no parameters of {name}")
    j = names.index(name)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[j], params)


def generate_round(cfg: config_lib.Config, params, data_file: str, out_file: str, seed: int) -> dict:
    """Writes the next round's data for one run (module docstring) and returns the generation record."""
    summary_file = os.path.splitext(out_file)[0] + ".json"
    done = read_json(summary_file)
    if os.path.isfile(out_file) and isinstance(done, dict):
        return done
    ds = load_npz(data_file) if data_file else load_or_make_default()
    selector = Selector(config_lib.selector_config(cfg, ds.num_steps))
    scorer = PromptCache(OracleScorer.for_dataset(ds, SCORER_MODES[cfg.round_scorer],
                                                  source=os.path.basename(data_file or default_dataset_path())),
                         batch_size=4096)
    result = generation.generate(selector, params, ds, scorer, mix=cand_lib.parse_mix(cfg.round_mix),
                                 mode=cfg.round_data, seed=seed, source=out_file)
    record = {"from": data_file or default_dataset_path(), "mix": cfg.round_mix, "mode": cfg.round_data,
              "scorer": cfg.round_scorer, **result.summary()}
    new = dataclasses.replace(result.dataset, meta={**result.dataset.meta, "generated": record})
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    save_npz(new, out_file)
    write_json_atomic(summary_file, record)
    return record


def run_rounds(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
               sweep: Mapping[str, Sequence[Any]] | None = None, *, seeds: int | None = None, out: str,
               restart: bool = False, baseline: str | None = None, report: Callable[..., str] | None = None,
               printer: Callable[[str], None] | None = None, workers: int | None = None,
               between_rounds: Callable[[int], None] | None = None, **grid_options) -> dict:
    """Runs the rounds (module docstring) into ``out``; returns what ``rounds.json`` holds.

    ``report`` writes each round-1 grid's own report (as :func:`~leverjax.run.launch.run_grid` does);
    ``between_rounds(r)`` is called after round r's data is written, before round r+1 trains (tests use it to
    stop the loop there). ``grid_options`` go to every grid.
    """
    printer = printer or (lambda s: print(s, flush=True))
    overrides = dict(overrides or {})
    total = rounds_of(names, overrides, sweep)
    records: list[dict] = []
    previous = launch.run_grid(names, overrides, sweep, seeds=seeds, out=os.path.join(out, "round1"),
                               restart=restart, baseline=baseline, report=report, printer=printer, workers=workers,
                               **grid_options)
    current = []  # (run of round 1, results root, status, run name there, data file) of the round just finished
    for run, st, rec in finished_results(previous.directory, previous.grid, previous.statuses):
        if st.get("state") == "done":
            current.append((run, previous.directory, st, run.name, run.config.data))
            records.append({"round": 1, "run": run.name, "variant": run.variant, "seed": run.seed,
                            "data": run.config.data or default_dataset_path(), "scorer_calls": 0,
                            "final": _final(rec)})
    for r in range(2, total + 1):
        nxt = []
        for run, root, st, name, data_file in current:
            if run.config.rounds < r:
                continue
            out_file = os.path.join(out, f"round{r}", "data", _safe(run.variant), f"seed={run.seed}.npz")
            gen = generate_round(run.config, _run_params(root, st, name), data_file, out_file,
                                 seed=run.seed * 1000 + r)
            printer(f"rounds: round {r} data for {run.name}: {gen['queries']} queries got {gen['prompts']} new "
                    f"candidates ({gen['scorer_calls']} scorer calls)")
            nxt.append((run, out_file, gen))
        if between_rounds is not None:
            between_rounds(r - 1)
        current_next = []
        for run, data_file, gen in nxt:
            sub_out = os.path.join(out, f"round{r}", _safe(run.variant), f"seed={run.seed}")
            sub = launch.run_grid([run.experiment], {**overrides, **dict(run.sweep), "data": data_file,
                                                     "seed": run.seed}, seeds=1, out=sub_out, restart=restart,
                                  report=None, printer=printer, tables=False, workers=1, **grid_options)
            done = [(x, s, c) for x, s, c in finished_results(sub.directory, sub.grid, sub.statuses)
                    if s.get("state") == "done"]
            if not done:
                printer(f"rounds: round {r} of {run.name} did not finish; its later rounds are skipped")
                continue
            sub_run, st, rec = done[0]
            current_next.append((run, sub.directory, st, sub_run.name, data_file))
            records.append({"round": r, "run": run.name, "variant": run.variant, "seed": run.seed,
                            "data": data_file, "scorer_calls": gen["scorer_calls"], "generation": gen,
                            "final": _final(rec)})
        current = current_next
    summary = {"rounds": total, "experiments": list(names), "runs": records}
    write_json_atomic(os.path.join(out, "rounds.json"), summary)
    return summary
