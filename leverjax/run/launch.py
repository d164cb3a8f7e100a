"""The batch ablation launcher: named experiments × sweeps × seeds, one compiled program per static shape.

    python run.py --experiment=rce_only,scheme5,scheme5_6 --sweep=kl_beta=0.05,0.1 --seeds=5 --out=results/ab

or from Python (a notebook)::

    from leverjax.run import launch
    result = launch.run_grid(["rce_only", "scheme5_6"], seeds=5, out="results/ab")
    print(open(result.report).read())

**Grid.** Each experiment's config is its registry config with the overrides applied; its runs are its own
``SWEEP`` merged with ``sweep`` (given values win) × ``seeds`` consecutive seeds. Runs whose configs have
the same :func:`~leverjax.core.config.static_signature` form a *group*: one compiled program that trains all of
them vmapped (:class:`~leverjax.run.engine.Runner`), with the run axis sharded over a mesh of every device
(the runs padded with copies of the last run to a multiple of the device count). On a CPU two groups
train at once by default, each in a worker process of its own (``workers``; :mod:`leverjax.run.workers`), a
group waiting for the group that trains the SFT/RCE prefix it reuses; else groups run one after another.
A run whose config is invalid, or whose loss turns NaN, is recorded as failed with its reason;
the others go on.

**Results directory** (every file written atomically: a temporary file, then ``os.replace``)::

    grid.json              the resolved grid: experiments, overrides, sweeps, runs and their groups, and the
                           provenance of the launch (command, git commit, versions, devices, data hash, date)
    baselines.json         reference selections on the grid's data (random, similarity retrieval; on synthetic
                           data also the best labelled trajectory and the oracle's greedy ceiling)
    status/<run>.json      pending | running | done | failed (with the reason), one per run
    runs/<group>/          the group's Runner directory: config.json, ckpt/ (per epoch, deleted when the group
                           has finished), best/ (best-epoch parameters of every run, leading run axis),
                           results.json (per-run metrics, and the provenance of the process that trained them)
    tb/<variant>/seed=<n>/ TensorBoard event files, per epoch, tagged <phase>/<metric> (leverjax.run.tracking)
    metrics.csv            one row per run × epoch × metric, and the final test metrics (phase "final")
    report.md, plots/      written by leverjax.report from metrics.csv

**Several processes** (``leverjax.run.distributed``: ``run.py --distributed``, one or more hosts): every process
runs the same command. They first check that they resolved the same grid (a hash of ``grid.json``, the
results directory and the flags that change what is trained); each group's run axis is sharded over the
devices of all processes; process 0 decides which runs are finished and alone writes the launcher's files,
while every process writes its shards of the checkpoints (orbax). The results directory must be on a
file system every process sees.

Re-running the same command skips finished runs (done, or failed by divergence or config, which would fail
again) and resumes unfinished groups from their last checkpoint; ``restart=True`` starts over. The CSV is
rebuilt from the per-group ``results.json`` files, which are written only when a group has finished.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from leverjax.run import registry as experiments
from leverjax.core import config as config_lib
from leverjax.run import distributed
from leverjax.run import provenance
from leverjax.core import stats
from leverjax.run import tracking
from leverjax.run import workers as workers_lib
from leverjax.run.checkpoint import status_file_name
from leverjax.fileio import read_json, records_from_json, write_json_atomic, write_jsonl_atomic, write_text_atomic
from leverjax.data import filter_queries, load_npz
from leverjax.data.synth import default_dataset_path, load_or_make_default
from leverjax.errors import ConfigError
from leverjax.run.engine import Runner, RunSpec, fmt_value, release_compiled

CSV_COLUMNS = ("group", "experiment", "run", "seed", "phase", "epoch", "metric", "value", "overrides")
_NOT_IN_RUN_NAME = config_lib.RUN_ONLY  # seeds and output places are no part of what a run is


def _hash(obj: Any, n: int = 8) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One run of the grid: an experiment, its sweep values, a seed and the resolved config."""

    experiment: str
    sweep: tuple[tuple[str, Any], ...]
    seed: int
    config: config_lib.Config | None  # None when the config is invalid (``error`` says why)
    overrides: str = ""  # what differs from the registry experiment: "field=value;..." (overrides + sweep)
    error: str = ""

    @property
    def variant(self) -> str:
        """The run without its seed (seeds are replicates: the report averages over them)."""
        if not self.sweep:
            return self.experiment
        return f"{self.experiment}[{','.join(f'{k}={fmt_value(v)}' for k, v in self.sweep)}]"

    @property
    def name(self) -> str:
        return f"{self.variant}/seed={self.seed}"

    @property
    def config_hash(self) -> str:
        if self.config is None:
            return _hash({"experiment": self.experiment, "overrides": self.overrides, "error": self.error})
        return _hash(config_lib.to_dict(self.config), 12)


@dataclasses.dataclass
class Group:
    """Runs sharing one static signature: one compiled program."""

    id: str  # g01, g02, ... in order of first appearance
    signature: str
    runs: list[GridRun]

    @property
    def key(self) -> str:
        return _hash(self.signature)

    @property
    def experiments(self) -> list[str]:
        return list(dict.fromkeys(r.experiment for r in self.runs))


@dataclasses.dataclass
class Grid:
    experiments: list[str]
    overrides: dict
    sweep: dict
    runs: list[GridRun]
    groups: list[Group]
    notes: list[str] = dataclasses.field(default_factory=list)  # overrides that replace an experiment's own values

    def group_of(self, run: GridRun) -> Group | None:
        return next((g for g in self.groups if run in g.runs), None)

    def to_json(self) -> dict:
        return {
            "experiments": self.experiments,
            "overrides": self.overrides,
            "notes": self.notes,
            "descriptions": {name: experiments.get(name).description for name in self.experiments},
            "sweep": {k: list(v) for k, v in self.sweep.items()},
            "groups": [{"id": g.id, "key": g.key, "experiments": g.experiments, "runs": [r.name for r in g.runs],
                        "static": json.loads(g.signature)} for g in self.groups],
            "runs": [{"name": r.name, "experiment": r.experiment, "variant": r.variant, "seed": r.seed,
                      "sweep": dict(r.sweep), "overrides": r.overrides, "config_hash": r.config_hash,
                      "group": (self.group_of(r).id if r.config is not None else None), "error": r.error,
                      "config": config_lib.to_dict(r.config) if r.config is not None else None}
                     for r in self.runs],
        }


def expand_grid(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
                sweep: Mapping[str, Sequence[Any]] | None = None, *, seeds: int | None = None,
                experiment_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Grid:
    """The runs of ``names`` × (each experiment's SWEEP merged with ``sweep``) × seeds, grouped by static signature.

    ``overrides`` apply to every experiment (like command-line flags); ``experiment_overrides[name]`` to one
    experiment, after them. A sweep may name any config field but the seed and output ones: sweepable
    values share a group, static values (``selector``, ``num_layers``, ``grpo_epochs``, ...) split the runs
    into one group per value. An unknown experiment or sweep field raises
    :class:`ConfigError`; an override that is invalid for one experiment, or a sweep value invalid for one
    run, makes only those runs failed ones (``GridRun.error``).
    """
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ConfigError("no experiment given; see --list_experiments")
    overrides = dict(overrides or {})
    if seeds is not None:
        overrides["seeds"] = seeds
    sweep = {k: tuple(dict.fromkeys(v)) for k, v in (sweep or {}).items()}
    for field in sweep:  # any field: static values make groups of their own (one compile each)
        if field not in config_lib.FIELDS or field in _NOT_IN_RUN_NAME:
            raise ConfigError(f"--sweep: {field!r} is not a config field that can be swept; fields: "
                              f"{', '.join(f for f in config_lib.FIELDS if f not in _NOT_IN_RUN_NAME)}")
    experiment_overrides = {k: dict(v) for k, v in (experiment_overrides or {}).items()}
    unknown = sorted(set(experiment_overrides) - set(names))
    if unknown:
        raise ConfigError(f"experiment_overrides for {', '.join(unknown)}, which are not in the grid")
    runs: list[GridRun] = []
    notes: list[str] = []
    for name in names:
        exp = experiments.get(name)
        own = experiments.overrides(name)
        for field, value in overrides.items():
            if field in own and own[field] != value and field not in _NOT_IN_RUN_NAME:
                notes.append(f"--{field}={fmt_value(value)} replaces {name}'s own {field}={fmt_value(own[field])}")
        these = {**overrides, **experiment_overrides.get(name, {})}
        shown = {k: v for k, v in these.items() if k not in _NOT_IN_RUN_NAME}
        merged = {**exp.sweep, **sweep}
        fields = list(merged)
        combos = list(itertools.product(*(merged[f] for f in fields))) if fields else [()]
        try:
            cfg = config_lib.replace(exp.config, these)
        except ConfigError as e:
            base_seed = int(these.get("seed", exp.config.seed))
            count = int(these.get("seeds", exp.config.seeds))
            for combo in combos:
                for s in range(max(count, 1)):
                    text = _overrides_text(shown, dict(zip(fields, combo)))
                    runs.append(GridRun(name, tuple(zip(fields, combo)), base_seed + s, None, text, str(e)))
            continue
        for combo in combos:
            values = dict(zip(fields, combo))
            text = _overrides_text(shown, values)
            for s in range(cfg.seeds):
                seed = cfg.seed + s
                try:
                    run_cfg = config_lib.replace(cfg, {**values, "seed": seed, "seeds": 1})
                    runs.append(GridRun(name, tuple(zip(fields, combo)), seed, run_cfg, text))
                except ConfigError as e:
                    runs.append(GridRun(name, tuple(zip(fields, combo)), seed, None, text, str(e)))
    by_signature: dict[str, list[GridRun]] = {}
    for run in runs:
        if run.config is not None:
            by_signature.setdefault(config_lib.static_signature(run.config), []).append(run)
    groups = [Group(f"g{i + 1:02d}", sig, members) for i, (sig, members) in enumerate(by_signature.items())]
    return Grid(names, overrides, sweep, runs, groups, notes)


def _overrides_text(overrides: Mapping[str, Any], sweep_values: Mapping[str, Any]) -> str:
    merged = {**overrides, **sweep_values}
    return ";".join(f"{k}={fmt_value(merged[k])}" for k in sorted(merged))


def run_specs(base: config_lib.Config, runs: Sequence[GridRun]):
    """The Runner's specs of ``runs`` relative to the group's ``base`` config: each run's sweepable fields
    that differ from ``base`` (so ``run_hyperparameters(base, specs)`` gives every run its own values)."""
    specs = []
    for r in runs:
        diff = tuple((f, getattr(r.config, f)) for f in config_lib.SWEEPABLE
                     if getattr(r.config, f) != getattr(base, f))
        specs.append(RunSpec(diff, r.seed, r.experiment))
    return specs


def default_out(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
                sweep: Mapping[str, Any] | None = None, root: str = "results") -> str:
    """``results/<experiments>[-<hash of the overrides and sweeps>]``: the same command, the same directory
    (so a re-run resumes); the seed count is not part of it, so more seeds add runs to the same grid."""
    names = list(dict.fromkeys(names))
    collection = [tag for tag, members in experiments.COLLECTIONS.items() if set(names) == set(members)]
    if collection:
        tag = collection[0]
    else:
        tag = "+".join(names)
        if len(tag) > 60:
            tag = f"{names[0]}+{len(names) - 1}more-{_hash(names, 6)}"
    extra = {k: v for k, v in (overrides or {}).items() if k not in _NOT_IN_RUN_NAME}
    if extra or sweep:
        tag += "-" + _hash([extra, {k: list(v) for k, v in (sweep or {}).items()}], 6)
    return os.path.join(root, tag)


# -- results directory ------------------------------------------------------------------------------


class _Paths:
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


def _finished(status: dict | None, run: GridRun, root: str) -> bool:
    """Whether ``run`` needs no training: done (with its results on disk), or failed in a way a re-run
    repeats (divergence is deterministic; a bad config stays bad). Other errors are retried."""
    if not status or status.get("config_hash") != run.config_hash:
        return False
    if status.get("state") == "done":
        return os.path.exists(os.path.join(root, status.get("directory", ""), "results.json"))
    return status.get("state") == "failed" and status.get("kind") in ("diverged", "config")


def _write_status(paths: _Paths, run: GridRun, state: str, **extra) -> dict:
    record = {"run": run.name, "experiment": run.experiment, "variant": run.variant, "seed": run.seed,
              "overrides": run.overrides, "config_hash": run.config_hash, "state": state,
              "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}
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


def _csv_number(value) -> str:
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
                writer.writerow((*head, epoch_rec["phase"], epoch_rec["epoch"], metric, _csv_number(value),
                                 run.overrides))
                rows += 1
        if rec.get("final"):
            finals.append({**ident, **records_from_json([rec["final"]])[0]})
        for metric, value in (rec.get("final") or {}).items():
            writer.writerow((*head, "final", "", metric, _csv_number(value), run.overrides))
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


# -- progress and compile times ---------------------------------------------------------------------


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int((s % 3600) // 60):02d}m"


def _epochs(cfg: config_lib.Config) -> int:
    return cfg.sft_epochs + cfg.rce_epochs + cfg.grpo_positive_only_epochs + cfg.grpo_epochs


class _Progress:
    """One line per epoch for the whole grid: groups and runs done, elapsed time and an estimate of the
    time left (run-epochs left at the rate measured on epochs without compilation, plus the mean compile
    time per group for the groups not started; with groups trained side by side, divided among them)."""

    def __init__(self, grid: Grid, pending: Mapping[str, list[GridRun]], finished_runs: int,
                 units: Mapping[str, int], printer: Callable[[str], None], quiet: bool = False):
        self.printer = (lambda s: None) if quiet else printer  # quiet: one group whose tables say it all
        self.groups_total = len(grid.groups)
        self.runs_total = sum(1 for r in grid.runs if r.config is not None)
        self.runs_done = finished_runs
        self.groups_done = sum(1 for g in grid.groups if not pending[g.id])
        self.units = dict(units)  # per group to train: the run-epochs it trains (reused prefixes left out)
        self.future_units = sum(self.units.values())  # those of the groups not started
        self.groups_left = sum(1 for g in grid.groups if pending[g.id])
        self.steady_units = self.steady_seconds = 0.0
        self.compile_seconds: list[float] = []
        self.t0 = time.perf_counter()
        self.active: dict[str, dict] = {}  # group id -> index, runs, run-epochs left, compile timer
        self.parallel = 1  # the most groups seen training at once

    def begin(self, index: int, group: Group, n: int, timer: "CompileTimer | None" = None) -> None:
        self.groups_left -= 1
        units = self.units[group.id]
        self.future_units -= units
        self.active[group.id] = {"index": index, "n": n, "units": units, "timer": timer}
        self.parallel = max(self.parallel, len(self.active))
        exps = ", ".join(group.experiments)
        self.printer(f"\n»» group {group.id} ({index}/{self.groups_total}): {exps} — {n} run(s) in one program")

    def epoch(self, group_id: str, info: dict) -> None:
        active = self.active[group_id]
        runs = info["runs"]  # fewer than the group's while it trains its runs' shared prefixes
        if runs == active["n"]:
            active["units"] = active["n"] * (info["epochs_total"] - info["epochs_done"])
        else:
            active["units"] = max(active["units"] - runs, 0)
        if info["epoch"] > 1:  # the first epoch of a phase includes its compilation
            self.steady_units += runs
            self.steady_seconds += info["seconds"]
        left = self.time_left()
        eta = f", ~{_fmt_seconds(left)} left" if left is not None else ""
        others = f" (+{len(self.active) - 1} more at once)" if len(self.active) > 1 else ""
        self.printer(f"»» grid: group {active['index']}/{self.groups_total} epoch {info['epochs_done']}/"
                     f"{info['epochs_total']}{others} | groups done {self.groups_done}/{self.groups_total}, runs done "
                     f"{self.runs_done}/{self.runs_total} | {_fmt_seconds(time.perf_counter() - self.t0)} elapsed{eta}")

    def end(self, group_id: str, runs: int, compile_seconds: float) -> None:
        self.active.pop(group_id, None)
        self.groups_done += 1
        self.runs_done += runs
        self.compile_seconds.append(compile_seconds)

    def time_left(self) -> float | None:
        if not self.steady_units:
            return None
        timers = [a["timer"].seconds for a in self.active.values() if a["timer"] is not None]
        seen = self.compile_seconds + timers
        compile_each = sum(seen) / len(seen) if seen else 0.0
        units = self.future_units + sum(a["units"] for a in self.active.values())
        return (units * self.steady_seconds / self.steady_units + self.groups_left * compile_each) / self.parallel


class CompileTimer:
    """Seconds JAX spent tracing, lowering and compiling (or fetching from the persistent cache) while active."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __init__(self):
        self.seconds = 0.0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event in self.EVENTS:
            self.seconds += duration

    def __enter__(self) -> "CompileTimer":
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        try:
            jax.monitoring.unregister_event_duration_listener(self._listener)
        except (AttributeError, ValueError):
            pass


# -- the launcher ---------------------------------------------------------------------------------


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

    @property
    def failed(self) -> list[dict]:
        return [s for s in self.statuses.values() if s and s.get("state") == "failed"]


def load_dataset(cfg: config_lib.Config, printer: Callable[[str], None] = print):
    """The data set ``cfg`` names (the built-in synthetic set when ``data`` is empty), query filters applied."""
    ds = load_npz(cfg.data) if cfg.data else load_or_make_default()
    ds, counts = filter_queries(ds, require_positive_query=cfg.require_positive_query,
                                min_group_size=cfg.min_group_size)
    if counts["dropped_small_group"] or counts["dropped_no_positive"]:
        printer(f"filters: kept {counts['kept']} of {counts['queries_in']} queries "
                f"({counts['dropped_small_group']} with fewer than {cfg.min_group_size} trajectories, "
                f"{counts['dropped_no_positive']} without a positive)")
    printer(f"data: {cfg.data or 'built-in synthetic set'} — {ds.num_queries} queries, K={ds.pool_size}, "
            f"M={ds.max_trajectories}, S={ds.num_steps}, d={ds.dim}")
    return ds


def _data_key(cfg: config_lib.Config) -> tuple:
    """What selects a data set: its file and the query filters."""
    return (cfg.data, cfg.require_positive_query, cfg.min_group_size)


def _data_path(cfg: config_lib.Config) -> str:
    return cfg.data or default_dataset_path()


def _baseline_variant(grid: Grid, baseline: str | None) -> str | None:
    """The variant the report compares with (as the report chooses it): ``baseline`` (a variant, or an
    experiment's first variant), else rce_only's first variant, else the first run's."""
    valid = [r for r in grid.runs if r.config is not None]
    for want in ([baseline] if baseline else []) + ["rce_only"]:
        match = [r.variant for r in valid if want in (r.variant, r.experiment)]
        if match:
            return match[0]
    return valid[0].variant if valid else None


def _reference_sets(grid: Grid, baseline: str | None, dataset_for: Callable) -> list[dict]:
    """One entry per data set of the grid (file and query filters): the data set, the variants trained on
    it and the config whose reward definition and evaluation shots the references use (the baseline's
    when it is trained on this set, else the first run's)."""
    base = _baseline_variant(grid, baseline)
    sets: dict[tuple, dict] = {}
    for run in grid.runs:
        if run.config is None:
            continue
        entry = sets.setdefault(_data_key(run.config), {"config": run.config, "variants": []})
        if run.variant not in entry["variants"]:
            entry["variants"].append(run.variant)
        if run.variant == base:
            entry["config"] = run.config
    for entry in sets.values():
        entry["dataset"] = dataset_for(entry["config"])
    return list(sets.values())


BASELINES_VERSION = 1


def _baselines(root: str, sets: Sequence[dict], printer: Callable[[str], None]) -> dict:
    """``baselines.json``: the reference selections of every data set (:mod:`leverjax.core.baselines`), reused
    from the previous file when the data, reward definition and shots are unchanged."""
    from leverjax.core import baselines
    from leverjax.core import rewards

    try:
        previous = {e.get("fingerprint"): e for e in read_json(os.path.join(root, "baselines.json")).get("sets", [])}
    except AttributeError:  # no previous file (or not the expected shape)
        previous = {}
    out = []
    for entry in sets:
        cfg, ds = entry["config"], entry["dataset"]
        reward = {k: getattr(cfg, k) for k in ("reward_mode", "w_hard", "w_soft", "w_rel")}
        digest = hashlib.sha1()
        for a in (ds.emb, ds.query_ids, ds.pool_ids, ds.traj, ds.acc, ds.correct, ds.gt_prob, ds.rel, ds.split):
            digest.update(np.ascontiguousarray(a).tobytes())
        fingerprint = _hash([BASELINES_VERSION, digest.hexdigest(), reward, cfg.eval_shots], 16)
        head = {"fingerprint": fingerprint, "data": cfg.data, "require_positive_query": cfg.require_positive_query,
                "min_group_size": cfg.min_group_size, "reward": reward, "variants": entry["variants"]}
        if fingerprint in previous:
            out.append({**previous[fingerprint], **head})
            continue
        t0 = time.perf_counter()
        raw = np.asarray(rewards.raw_rewards(ds.correct, ds.acc, ds.gt_prob, ds.rel, mode=cfg.reward_mode,
                                             w_hard=cfg.w_hard, w_soft=cfg.w_soft, w_rel=cfg.w_rel))
        refs = baselines.compute(ds, raw, shots=cfg.eval_shots)
        out.append({**head, **baselines.json_ready(refs)})
        printer("grid: reference selections (random, similarity retrieval"
                + (", best labelled, oracle greedy" if ds.oracle else "") + f") computed in "
                f"{time.perf_counter() - t0:.1f}s")
    return {"sets": out}


def _backfill_events(root: str, grid: Grid, statuses: Mapping[str, dict | None], tb) -> None:
    """TensorBoard events of finished runs that have none (e.g. trained before event files were written)."""
    for run, st, rec in finished_results(root, grid, statuses):
        if st.get("state") == "done" and not tb.has_events(run.name):
            tb.finish(run.name, rec["history"], rec.get("final"))


@dataclasses.dataclass(frozen=True)
class _GroupJob:
    """What training one group needs besides the group itself (sent to a worker process as is)."""

    out: str
    prefix_cache: str
    restart: bool
    init_from: str | None
    load_init: Callable | None
    tables: bool
    keep_checkpoints: bool
    provenance: dict


def _train_group(job: _GroupJob, group: Group, todo: Sequence[GridRun], ds, devices, printer: Callable[[str], None],
                 on_start: Callable[["CompileTimer"], None], on_epoch: Callable[[dict, Mapping[str, str]], None]) -> dict:
    """Trains the runs ``todo`` of ``group`` (one vmapped program) and writes their statuses, ``results.json``
    and, unless kept, deletes their checkpoints. Returns the outcome: ``state`` (done | failed), ``reason``
    (failed), ``seconds``, ``compile_seconds``, ``statuses`` (run name -> status record) and ``records`` (per
    run: history, final metrics, failure). A failure of the group is recorded, not raised (except with
    several cooperating processes, which could go on out of step)."""
    paths = _Paths(job.out)
    specs = run_specs(todo[0].config, todo)
    directory = f"{group.id}-{group.key}-{_hash([(r.name, r.config_hash) for r in todo], 6)}"
    rel = os.path.join("runs", directory)
    for run in todo:
        _write_status(paths, run, "running", group=group.id, directory=rel)
    names = {spec.label: run.name for spec, run in zip(specs, todo)}
    t0 = time.perf_counter()
    with CompileTimer() as timer:
        on_start(timer)
        try:
            runner = Runner(todo[0].config, ds, specs, name=directory, workdir=paths.runs,
                            out=printer if job.tables else (lambda s: None), on_nonfinite="record",
                            devices=devices, on_epoch=lambda info: on_epoch(info, names), restart=job.restart,
                            init_from=job.init_from, load_init=job.load_init, prefix_cache=job.prefix_cache,
                            extra_meta={"grid_group": group.id, "grid_runs": [r.name for r in todo]})
            results = runner.run()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 -- any failure of one group is recorded; the grid goes on
            if distributed.is_multiprocess():
                raise
            reason = f"{type(e).__name__}: {e}"
            printer(f"»» group {group.id} failed: {reason}")
            statuses = {run.name: _write_status(paths, run, "failed", kind="error", reason=reason, group=group.id,
                                                directory=rel) for run in todo}
            return {"state": "failed", "reason": reason, "seconds": time.perf_counter() - t0,
                    "compile_seconds": timer.seconds, "statuses": statuses, "records": None}
    seconds = time.perf_counter() - t0
    records = _write_group_results(job.out, rel, todo, specs, results, job.provenance)
    statuses = {}
    for j, run in enumerate(todo):
        failure = results.failures.get(j)
        if failure:
            statuses[run.name] = _write_status(paths, run, "failed", kind="diverged", reason=failure["reason"],
                                               failure=failure, group=group.id, directory=rel)
            printer(f"»» {run.name} diverged: {failure['reason']} (recorded; the other runs went on)")
        else:
            statuses[run.name] = _write_status(paths, run, "done", group=group.id, directory=rel)
    distributed.barrier("group-done")  # no process still reads the group's checkpoints
    if not job.keep_checkpoints and distributed.is_primary():
        shutil.rmtree(os.path.join(job.out, rel, "ckpt"), ignore_errors=True)
    return {"state": "done", "seconds": seconds, "compile_seconds": timer.seconds, "statuses": statuses,
            "records": records}


_WORKER_DATASETS: dict[tuple, Any] = {}  # in a worker process: the data sets it has loaded


def _train_group_in_worker(task: tuple[Group, list[GridRun]], emit: Callable[[tuple], None], job: _GroupJob,
                           dataset) -> dict:
    """:func:`_train_group` in a worker process (:func:`leverjax.run.workers.run_tasks`): its progress and printed
    lines go to the launcher as messages; the group's compiled programs are released afterwards."""
    group, todo = task
    cfg = todo[0].config
    if dataset is None:
        key = _data_key(cfg)
        if key not in _WORKER_DATASETS:
            _WORKER_DATASETS[key] = load_dataset(cfg, printer=lambda s: None)  # the launcher has said it
        dataset = _WORKER_DATASETS[key]
    try:
        return _train_group(job, group, todo, dataset, None, lambda line: emit(("print", line)),
                            on_start=lambda timer: None, on_epoch=lambda info, names: emit(("epoch", info, names)))
    finally:
        release_compiled()


def auto_workers(groups: int) -> int:
    """How many groups :func:`run_grid` trains at once by default: 2 on a CPU of 2 or more cores when there
    are several groups (measured on 2 cores: see :mod:`leverjax.run.workers`), else 1 (one accelerator is
    not shared between processes)."""
    return 2 if groups > 1 and jax.default_backend() == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def _resolve_workers(workers: int | None, groups: int, devices_given: bool) -> int:
    """The number of groups trained at once: ``workers`` checked against the launch (``None``: the default)."""
    if workers is None:
        return 1 if distributed.is_multiprocess() or devices_given else auto_workers(groups)
    if workers < 1:
        raise ConfigError(f"--workers={workers} must be at least 1")
    if workers > 1 and distributed.is_multiprocess():
        raise ConfigError(f"--workers={workers} cannot be combined with several cooperating processes "
                          "(--distributed): each group is already spread over them; use --workers=1")
    if workers > 1 and devices_given:
        raise ConfigError(f"workers={workers} trains groups in processes of their own, which use their own "
                          "devices: give no devices, or workers=1")
    return min(workers, max(groups, 1))


def _prefix_key(run: GridRun, through: str, init_from: str | None) -> str:
    """What decides a run's state after its phases up to ``through`` (sft | rce), as the launcher sees it
    (the runner's prefix-cache key adds the data's contents and the phase list)."""
    return _hash([_data_key(run.config), run.seed, init_from, config_lib.prefix_fields(run.config, through)], 16)


def _prefix_dependencies(groups: Sequence[Group], pending: Mapping[str, list[GridRun]],
                         init_from: str | None) -> dict[str, set[str]]:
    """For each group, the earlier groups it should wait for: the first group with a run of the same SFT
    prefix (same data, seed and SFT-phase config) trains it into the prefix cache, and a later group that
    starts while it trains would train it again (the result is the same, the time is lost)."""
    first: dict[str, str] = {}
    depends: dict[str, set[str]] = {}
    for group in groups:
        depends[group.id] = set()
        for run in pending[group.id]:
            producer = first.setdefault(_prefix_key(run, "sft", init_from), group.id)
            if producer != group.id:
                depends[group.id].add(producer)
    return depends


def _expected_run_epochs(groups: Sequence[Group], pending: Mapping[str, list[GridRun]],
                         init_from: str | None) -> dict[str, int]:
    """Per group, the run-epochs it will train: a run whose SFT/RCE (or SFT) prefix an earlier run of the
    grid trains starts after it (for the progress lines' estimate of the time left)."""
    seen: dict[str, set[str]] = {"sft": set(), "rce": set()}
    units = {}
    for group in groups:
        units[group.id] = 0
        for run in pending[group.id]:
            cfg, keys = run.config, {k: _prefix_key(run, k, init_from) for k in seen}
            skip = cfg.sft_epochs + cfg.rce_epochs if keys["rce"] in seen["rce"] else \
                cfg.sft_epochs if keys["sft"] in seen["sft"] else 0
            units[group.id] += _epochs(cfg) - skip
            for k in seen:
                seen[k].add(keys[k])
    return units


def run_grid(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
             sweep: Mapping[str, Sequence[Any]] | None = None, *, seeds: int | None = None, out: str | None = None,
             restart: bool = False, baseline: str | None = None, dataset=None, devices: Sequence | None = None,
             report: Callable[..., str] | None = None, tables: bool = True, printer: Callable[[str], None] | None = None,
             experiment_overrides: Mapping[str, Mapping[str, Any]] | None = None,
             keep_checkpoints: bool = False, init_from: str | None = None, load_init: Callable | None = None,
             prefix_cache: str | None = None, wandb_project: str | None = None,
             command: str | None = None, workers: int | None = None) -> GridResult:
    """Trains the grid (see the module docstring) into ``out`` and writes its metrics and summary.

    ``dataset``: a :class:`~leverjax.data.Dataset` to train every group on instead of loading each config's
    ``data``. ``devices``: the devices the run axis is sharded over (default: all of ``jax.devices()``).
    ``tables``: print the Runner's per-epoch tables besides the grid's progress lines.
    ``keep_checkpoints``: keep a finished group's per-epoch checkpoints (``ckpt/``, only needed to resume
    it; about 13 MB per run on the default data) besides its ``best/`` parameters and ``results.json``.
    ``init_from``: parameters every run starts from (a leverjax parameter folder or an original ``.pt``/``.ckpt``),
    read by ``load_init`` (the command line passes :func:`leverjax.tools.interop.load_selector_params`).
    ``report``: writes the report once the metrics are written, ``report(out, baseline=, printer=)`` returning
    its path (the command line passes :func:`leverjax.report.markdown.write_report`); ``None``: no report.
    ``prefix_cache``: where runs keep their SFT/RCE prefix for later runs (default ``prefix_cache/`` beside
    ``out``, shared by every results directory there).
    ``wandb_project``: also log every run to this Weights & Biases project (needs ``wandb``).
    ``command``: the command line recorded in the provenance (default: this process's).
    ``workers``: train up to this many groups at once, each in a process of its own (:mod:`leverjax.run.workers`);
    ``None`` decides (:func:`auto_workers`). Each group computes what it computes alone.
    """
    printer = printer or ((lambda s: print(s, flush=True)) if distributed.is_primary() else (lambda s: None))
    t_start = time.perf_counter()
    grid = expand_grid(names, overrides, sweep, seeds=seeds, experiment_overrides=experiment_overrides)
    _resolve_workers(workers, len(grid.groups), devices is not None)  # a bad value fails before anything is written
    if baseline and baseline not in grid.experiments and baseline not in {r.variant for r in grid.runs}:
        raise ConfigError(f"--baseline={baseline!r} is not a run of this grid; runs: "
                          f"{', '.join(dict.fromkeys(r.variant for r in grid.runs))}")
    out = out or default_out(grid.experiments, grid.overrides, grid.sweep)
    distributed.agree("grid", {"grid": grid.to_json(), "out": out, "restart": restart, "baseline": baseline,
                               "devices": len(devices) if devices is not None else None,
                               "checkpoints": keep_checkpoints}, what="command (resolved grid)")
    paths = _Paths(out)
    prefix_cache = prefix_cache or os.path.join(os.path.dirname(os.path.abspath(out)), "prefix_cache")
    wandb_logs = tracking.WandbLogs(wandb_project, out) if wandb_project else None  # fails early without wandb
    if restart and distributed.is_primary():
        for path in (paths.runs, paths.status, paths.plots):
            shutil.rmtree(path, ignore_errors=True)
        for path in (paths.csv, paths.report, paths.summary, paths.jsonl):
            if os.path.exists(path):
                os.remove(path)
    distributed.barrier("grid-restart")
    os.makedirs(paths.status, exist_ok=True)
    os.makedirs(paths.runs, exist_ok=True)
    datasets: dict[tuple, Any] = {}

    def dataset_for(cfg: config_lib.Config):
        if dataset is not None:
            return dataset
        key = _data_key(cfg)
        if key not in datasets:
            datasets[key] = load_dataset(cfg, printer)
        return datasets[key]

    reference = _reference_sets(grid, baseline, dataset_for)  # loads the data sets (the default one is made)
    prov = provenance.collect(command=command, data_paths=[None] if dataset is not None else
                              list(dict.fromkeys(_data_path(r.config) for r in grid.runs if r.config is not None)))
    if distributed.is_primary():
        write_json_atomic(paths.grid, {**grid.to_json(), "provenance": prov})
        write_json_atomic(os.path.join(out, "baselines.json"), _baselines(out, reference, printer))
    devices_given = devices is not None
    devices = list(devices) if devices_given else jax.devices()

    # With several processes, process 0's view of the finished runs decides for all of them.
    statuses: dict[str, dict | None] = distributed.broadcast(
        "grid-statuses", {r.name: read_json(paths.status_file(r)) for r in grid.runs})
    for run in grid.runs:
        if run.config is None:
            statuses[run.name] = _write_status(paths, run, "failed", kind="config", reason=run.error)
    pending = {g.id: [r for r in g.runs if not _finished(statuses[r.name], r, out)] for g in grid.groups}
    for group in grid.groups:
        for run in pending[group.id]:
            statuses[run.name] = _write_status(paths, run, "pending", group=group.id)
    finished = sum(1 for g in grid.groups for r in g.runs if r not in pending[g.id])
    valid = sum(1 for r in grid.runs if r.config is not None)
    if len(grid.experiments) == 1:
        printer(f"{grid.experiments[0]}: {experiments.get(grid.experiments[0]).description}")
    printer(f"grid: {len(grid.experiments)} experiment(s), {len(grid.runs)} run(s) in {len(grid.groups)} group(s) "
            f"(one compiled program each) on {len(devices)} device(s); results in {out}")
    if finished:
        printer(f"grid: {finished} of {valid} runs already finished there (skipped); "
                f"{sum(map(len, pending.values()))} to train")
    for note in grid.notes:
        printer(f"grid: note: {note}")
    for run in grid.runs:
        if run.config is None:
            printer(f"grid: {run.name} not run: {run.error}")
    many = len(grid.experiments) > 1 or len(grid.groups) > 1 or not tables  # one experiment: its tables say it all
    to_train = [g for g in grid.groups if pending[g.id]]
    progress = _Progress(grid, pending, finished, _expected_run_epochs(to_train, pending, init_from), printer,
                         quiet=not many)
    tb = tracking.TensorBoardLogs(out)
    group_log: list[dict] = []
    job = _GroupJob(out=out, prefix_cache=prefix_cache, restart=restart, init_from=init_from, load_init=load_init, tables=tables,
                    keep_checkpoints=keep_checkpoints, provenance=prov)
    index_of = {g.id: i for i, g in enumerate(grid.groups, 1)}
    for group in grid.groups:
        if not pending[group.id]:
            group_log.append({"id": group.id, "experiments": group.experiments, "runs": 0, "state": "skipped"})
    workers = _resolve_workers(workers, len(to_train), devices_given)
    if workers > 1:
        printer(f"grid: training up to {workers} groups at once, each in a process of its own (--workers)")

    def record_epoch(group: Group, info: dict, names: Mapping[str, str]) -> None:
        progress.epoch(group.id, info)
        if distributed.is_primary():
            for rec in info.get("records", ()):
                tb.epoch(names[rec["run"]], info["epochs_done"], rec["phase"], rec)

    def group_ended(group: Group, outcome: dict) -> None:
        todo = pending[group.id]
        statuses.update(outcome["statuses"])
        done = outcome["state"] == "done"
        if done and distributed.is_primary():
            for run, rec in zip(todo, outcome["records"]):
                tb.finish(run.name, rec["history"], rec["final"])
                if wandb_logs is not None:
                    wandb_logs.log_run(run.name, run.variant, rec["history"], rec["final"],
                                       {**config_lib.to_dict(run.config), "experiment": run.experiment,
                                        "grid": out}, rec["failure"])
        progress.end(group.id, len(todo), outcome["compile_seconds"])
        group_log.append({"id": group.id, "experiments": group.experiments, "runs": len(todo),
                          "seconds": outcome["seconds"], "compile_seconds": outcome["compile_seconds"],
                          "state": outcome["state"], **({} if done else {"reason": outcome["reason"]})})
        if done:
            write_metrics(out, grid, statuses)
            if many:
                printer(f"»» group {group.id} done in {_fmt_seconds(outcome['seconds'])} "
                        f"(compile {outcome['compile_seconds']:.1f}s)")

    try:
        if workers > 1:
            by_id = {g.id: g for g in to_train}

            def show(group_id: str, message: tuple) -> None:
                kind, *data = message
                if kind == "epoch":
                    record_epoch(by_id[group_id], *data)
                else:  # a line the group's runner printed, marked with its group
                    printer("\n".join(f"[{group_id}] {line}" if line else line for line in data[0].split("\n")))

            def lost(group_id: str, exitcode: int | None) -> None:
                reason = f"its worker process died (exit code {exitcode})"
                printer(f"»» group {group_id} failed: {reason}")
                statuses_lost = {run.name: _write_status(paths, run, "failed", kind="error", reason=reason,
                                                         group=group_id) for run in pending[group_id]}
                group_ended(by_id[group_id], {"state": "failed", "reason": reason, "seconds": 0.0,
                                              "compile_seconds": 0.0, "statuses": statuses_lost, "records": None})

            workers_lib.run_tasks(
                {g.id: (g, pending[g.id]) for g in to_train}, workers=workers, worker_fn=_train_group_in_worker,
                worker_args=(job, dataset), depends=_prefix_dependencies(to_train, pending, init_from),
                cost=progress.units,
                on_start=lambda gid: progress.begin(index_of[gid], by_id[gid], len(pending[gid])), on_message=show,
                on_done=lambda gid, outcome: group_ended(by_id[gid], outcome), on_lost=lost)
        else:
            for group in to_train:
                todo = pending[group.id]
                outcome = _train_group(
                    job, group, todo, dataset_for(todo[0].config), devices, printer,
                    on_start=lambda timer, group=group, todo=todo: progress.begin(index_of[group.id], group,
                                                                                  len(todo), timer),
                    on_epoch=lambda info, names, group=group: record_epoch(group, info, names))
                group_ended(group, outcome)
                release_compiled()  # groups share no program, and a process holds a limited number of memory mappings
    except KeyboardInterrupt:
        tb.close()
        raise
    group_log.sort(key=lambda g: index_of[g["id"]])

    summary = write_metrics(out, grid, statuses)
    if distributed.is_primary():
        _backfill_events(out, grid, statuses, tb)
    tb.close()
    report_path = None
    if report and distributed.is_primary():
        report_path = report(out, baseline=baseline, printer=printer)
    distributed.barrier("grid-done")
    result = GridResult(out, grid, statuses, group_log, paths.csv, report_path, time.perf_counter() - t_start,
                        summary["summary"], summary["final_split"])
    print_summary(result, printer)
    return result


def _write_group_results(root: str, rel: str, runs: Sequence[GridRun], specs, results,
                         prov: dict | None = None) -> list[dict]:
    """``runs/<group>/results.json``: every run's epoch records (up to its failure) and final test metrics,
    and the provenance of the process that trained them; returns the per-run records."""
    index = {spec.label: j for j, spec in enumerate(specs)}
    assert len(index) == len(specs), "run labels of a group must be unique"
    history: list[list[dict]] = [[] for _ in runs]
    for rec in results.history:
        history[index[rec["run"]]].append(
            {k: v for k, v in rec.items() if k not in ("run", "group", "seed")})
    out = []
    for j, run in enumerate(runs):
        failure = results.failures.get(j)
        records = history[j]
        if failure:  # keep the epochs up to and including the one that diverged
            stop = next((i for i, r in enumerate(records)
                         if r["phase"] == failure["phase"] and r["epoch"] == failure["epoch"]), len(records) - 1)
            records = records[: stop + 1]
        final = None if failure else {k: v for k, v in results.final[j].items() if k not in ("run", "group", "seed")}
        out.append({"name": run.name, "config_hash": run.config_hash, "experiment": run.experiment,
                    "variant": run.variant, "seed": run.seed, "history": records, "final": final,
                    "failure": failure})
    if distributed.is_primary():
        write_json_atomic(os.path.join(root, rel, "results.json"),
                          {**final_split_record(results.final_split), "runs": out, "provenance": prov})
    return out


def print_summary(result: GridResult, printer: Callable[[str], None]) -> None:
    """The groups' times (several groups), the final test metrics (mean ± 95% CI over seeds per variant),
    where the outputs are, and the failed runs with their reasons."""
    trained = [g for g in result.groups if g["state"] != "skipped"]
    if len(result.grid.groups) > 1 and trained:
        printer("\n== grid groups (compile = tracing + compiling, or fetching from the persistent cache)")
        printer(f"{'group':<6} {'runs':>5} {'wall':>9} {'compile':>9}  experiments")
        for g in trained:
            printer(f"{g['id']:<6} {g['runs']:>5} {g.get('seconds', 0):>8.1f}s {g.get('compile_seconds', 0):>8.1f}s  "
                    f"{', '.join(g['experiments'])}{'  FAILED' if g['state'] == 'failed' else ''}")
    summary = result.summary
    note = final_split_note(result.final_split)
    if summary and result.final_split is None:
        printer(f"\n== {note}")
    elif summary:
        seeds = sorted({r.seed for r in result.grid.runs})
        variants = list(summary)
        keys = [k for k in next(iter(summary.values())) if k.startswith("test_")]
        printer(f"\n== final evaluation on {result.final_split} (mean ± 95% CI over {len(seeds)} "
                f"seed{'s' if len(seeds) > 1 else ''})")
        if note:
            printer(f"   ({note}; the metrics keep their test_* names)")
        if len(variants) > 4:  # variants as rows, the headline metrics as columns
            keys = [k for k in keys if k.startswith("test_oracle_acc_")] or keys[:4]
            width = max(len(v) for v in variants) + 2
            printer(" " * width + "".join(f"{k[5:]:>22}" for k in keys))
            for v in variants:
                printer(f"{v:<{width}}" + "".join(f"{stats.format_ci(*summary[v][k]):>22}" for k in keys))
        else:
            width = max(len(k) for k in keys) + 2
            printer(" " * width + "".join(f"{v:>24}" for v in variants))
            for k in keys:
                printer(f"{k:<{width}}" + "".join(f"{stats.format_ci(*summary[v][k]):>24}" for v in variants))
    done = sum(1 for s in result.statuses.values() if s and s.get("state") == "done")
    printer(f"\n{done} run(s) done, {len(result.failed)} failed, in {_fmt_seconds(result.seconds)}; outputs in "
            f"{result.directory} (metrics.csv, summary.json" + (", report.md)" if result.report else ")"))
    for s in result.failed:
        printer(f"  failed: {s['run']}: {s.get('reason', '')}")
