"""The grid's results files, their one home: per-run statuses, ``metrics.csv``, ``metrics.jsonl``,
``summary.json`` and each group's ``results.json`` (the layout: docs/running.md)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from typing import TYPE_CHECKING, Mapping, Sequence

from leverjax.core import stats
from leverjax.fileio import records_from_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from leverjax.run import distributed
from leverjax.run.checkpoint import status_file_name
from leverjax.run.keys import init_marker

if TYPE_CHECKING:  # annotations only
    from leverjax.run.grid import Grid, GridRun


CSV_COLUMNS = ("group", "experiment", "variant", "seed", "phase", "epoch", "metric", "value", "overrides")


class Paths:
    def __init__(self, root: str):
        self.root = root
        self.grid = os.path.join(root, "grid.json")
        self.status = os.path.join(root, "status")
        self.runs = os.path.join(root, "runs")
        self.csv = os.path.join(root, "metrics.csv")
        self.report = os.path.join(root, "report.md")
        self.summary = os.path.join(root, "summary.json")
        self.jsonl = os.path.join(root, "metrics.jsonl")
        self.plots = os.path.join(root, "plots")

    def status_file(self, run: GridRun) -> str:
        return os.path.join(self.status, status_file_name(run.name))


def is_finished(status: dict | None, run: GridRun, root: str, init_from: str | None) -> bool:
    """Whether ``run`` needs no training: done (with its results on disk), or failed in a way a re-run
    repeats (divergence is deterministic; a bad config stays bad), from the same starting parameters
    (``init_from``, as :func:`leverjax.run.keys.init_marker` sees it). Other errors are retried."""
    if not status or status.get("config_hash") != run.config_hash:
        return False
    if status.get("init_from") != init_marker(init_from):
        return False
    if status.get("state") == "done":
        return os.path.exists(os.path.join(root, status.get("directory", ""), "results.json"))
    return status.get("state") == "failed" and status.get("kind") in ("diverged", "config")


def write_status(paths: Paths, run: GridRun, state: str, *, init_from: str | None, **extra) -> dict:
    record = {"run": run.name, "experiment": run.experiment, "variant": run.variant, "seed": run.seed,
              "overrides": run.overrides, "config_hash": run.config_hash, "init_from": init_marker(init_from),
              "state": state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
    if distributed.is_primary():
        write_json_atomic(paths.status_file(run), record)
    return record


def final_split_note(split: str | None) -> str | None:
    """One line saying why the final metrics are not on the test split (``None`` when they are)."""
    if split == "test":
        return None
    if split == "val":
        return "the data has no test queries: the final evaluation uses the val split"
    return "the data has no test or val queries: there is no final evaluation"


def final_split_record(split: str | None) -> dict:
    """``{"final_split": ...}`` plus the reason when it is not the test split (for the JSON outputs)."""
    note = final_split_note(split)
    return {"final_split": split, **({"final_split_reason": note} if note else {})}


_UNDEFINED_REASONS = {
    "greedy_labelled_reward": "no greedy selection of the split is a labelled trajectory",
}


def undefined_record(final_records: list[dict], summary: dict) -> dict:
    """``{"undefined": {metric: reason}}`` for the metrics written as ``null`` (empty when none is)."""
    out = {}
    for rec in final_records:
        for k, v in rec.items():
            if isinstance(v, float) and not math.isfinite(v):
                base = k.removeprefix("best_").removeprefix("test_")
                out.setdefault(k, _UNDEFINED_REASONS.get(base, "not finite on the split's queries (no query "
                                                               "defines it)"))
    if any(not math.isfinite(half) and math.isfinite(mean)
           for group in summary.values() for mean, half in group.values()):
        out["summary_ci"] = "a group with one seed has no confidence interval (its half width is null)"
    return {"undefined": out} if out else {}


def csv_number(value) -> str:
    """A metric value for the CSV: ``nan`` where the JSON holds ``null`` (an undefined value)."""
    return "nan" if value is None else repr(float(value))


def finished_results(root: str, grid: Grid, statuses: Mapping[str, dict | None]) -> list[tuple[GridRun, dict, dict]]:
    """``(run, status, results record)`` of the grid's runs whose ``results.json`` is on disk, in grid order.
    Runs of earlier grids in the same directory are left out."""
    cache: dict[str, dict] = {}
    out = []
    for run in grid.runs:
        st = statuses.get(run.name)
        if not st or st.get("config_hash") != run.config_hash or not st.get("directory"):
            continue
        path = os.path.join(root, st["directory"], "results.json")
        if path not in cache:
            try:
                with open(path) as f:
                    content = json.load(f)
                cache[path] = {r["name"]: {**r, "final_split": content.get("final_split", "test")}
                               for r in content["runs"]}
            except (OSError, ValueError, KeyError):
                cache[path] = {}
        rec = cache[path].get(run.name)
        if rec is not None and rec.get("config_hash") == run.config_hash:
            out.append((run, st, rec))
    return out


def write_metrics(root: str, grid: Grid, statuses: Mapping[str, dict | None]) -> dict:
    """Rebuilds ``metrics.csv`` (long: one row per run × epoch × metric), ``metrics.jsonl`` (one record per
    run, phase and epoch) and ``summary.json`` (every run's final test metrics and their mean ± 95% CI per
    variant) from the per-group ``results.json`` of the finished runs; returns the summary (``rows``: the
    number of CSV rows)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    records, finals, splits = [], [], []
    rows = 0
    for run, st, rec in finished_results(root, grid, statuses):
        splits.append(rec["final_split"])
        head = (st.get("group", ""), run.experiment, run.variant, run.seed)
        ident = {"run": run.name, "variant": run.variant, "experiment": run.experiment, "seed": run.seed}
        for epoch_rec in rec["history"]:
            records.append({**ident, **epoch_rec})
            for metric, value in epoch_rec.items():
                if metric in ("phase", "epoch"):
                    continue
                writer.writerow((*head, epoch_rec["phase"], epoch_rec["epoch"], metric, csv_number(value),
                                 run.overrides))
                rows += 1
        if rec.get("final"):
            finals.append({**ident, **records_from_json([rec["final"]])[0]})
        for metric, value in (rec.get("final") or {}).items():
            writer.writerow((*head, "final", "", metric, csv_number(value), run.overrides))
            rows += 1
    split = max(set(splits), key=splits.count) if splits else "test"
    by_variant = stats.summarize(finals, "variant")
    summary = {**final_split_record(split), "final": finals, "summary": by_variant,
               **undefined_record(finals, by_variant)}
    if distributed.is_primary():
        write_text_atomic(os.path.join(root, "metrics.csv"), buf.getvalue())
        write_jsonl_atomic(os.path.join(root, "metrics.jsonl"), records)
        write_json_atomic(os.path.join(root, "summary.json"), summary)
    return {**summary, "rows": rows}


def write_group_results(root: str, rel: str, runs: Sequence[GridRun], specs, results,
                         prov: dict | None = None) -> list[dict]:
    """``runs/<group>/results.json``: every run's epoch records (up to its failure) and final test metrics,
    and the provenance of the process that trained them; returns the per-run records."""
    index = {spec.name: j for j, spec in enumerate(specs)}
    assert len(index) == len(specs), "run names of a group must be unique"
    history: list[list[dict]] = [[] for _ in runs]
    for rec in results.history:
        history[index[rec["run"]]].append(
            {k: v for k, v in rec.items() if k not in ("run", "variant", "seed")})
    out = []
    for j, run in enumerate(runs):
        failure = results.failures.get(j)
        records = history[j]
        if failure:  # keep the epochs up to and including the one that diverged
            stop = next((i for i, r in enumerate(records)
                         if r["phase"] == failure["phase"] and r["epoch"] == failure["epoch"]), len(records) - 1)
            records = records[: stop + 1]
        final = None if failure else {k: v for k, v in results.final[j].items() if k not in ("run", "variant", "seed")}
        questions = results.questions[j] if results.questions and not failure else None
        out.append({"name": run.name, "config_hash": run.config_hash, "experiment": run.experiment,
                    "variant": run.variant, "seed": run.seed, "history": records, "final": final,
                    "failure": failure, **({"questions": questions} if questions else {})})
    if distributed.is_primary():
        write_json_atomic(os.path.join(root, rel, "results.json"),
                          {**final_split_record(results.final_split), "runs": out, "provenance": prov})
    return out


@dataclasses.dataclass
class GridResult:
    directory: str
    grid: Grid
    statuses: dict  # run name -> status record
    groups: list[dict]  # per group: id, experiments, runs trained, seconds, compile_seconds, state
    csv: str
    report: str | None
    seconds: float
    summary: dict = dataclasses.field(default_factory=dict)  # variant -> metric -> [mean, 95% CI half width]
    final_split: str | None = "test"  # the split of the final metrics (val when the data has no test queries)
    undefined: dict = dataclasses.field(default_factory=dict)  # metric -> why it is undefined (written as null)

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.statuses.values() if s and s.get("state") == "failed"]
