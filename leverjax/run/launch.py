"""The batch ablation launcher: named experiments × sweeps × seeds, one compiled program per static shape.

    python run.py --experiment=rce_only,scheme5,scheme5_6 --sweep=kl_beta=0.05,0.1 --seeds=5 --out=results/ab

or from Python (a notebook)::

    from leverjax.report.markdown import write_report
    from leverjax.run import launch
    result = launch.run_grid(["rce_only", "scheme5_6"], seeds=5, out="results/ab", report=write_report)
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
    report.md, plots/      written by leverjax.report from metrics.csv (run.py; run_grid with report=write_report)

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

import dataclasses
import os
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from leverjax.core import config as config_lib
from leverjax.data import filter_queries, load_npz
from leverjax.data.curate import curate
from leverjax.data.synth import default_dataset_path, load_or_make_default, preset_recipe, recipe_flags
from leverjax.errors import ConfigError
from leverjax.fileio import read_json, write_json_atomic
from leverjax.run import distributed, provenance
from leverjax.run import registry as experiments
from leverjax.run import tracking
from leverjax.run import workers as workers_lib
from leverjax.run.console import CompileTimer, Progress, fmt_seconds, print_summary, run_epochs
from leverjax.run.engine import Runner, release_compiled
from leverjax.run.grid import Grid, GridRun, Group, default_out, expand_grid, run_specs
from leverjax.run.keys import data_fingerprint, prefix_key, short_hash
from leverjax.run.results import (
    GridResult, Paths, finished_results, is_finished, write_group_results, write_metrics, write_status,
)

def load_dataset(cfg: config_lib.Config, printer: Callable[[str], None] = print, base=None):
    """The data set ``cfg`` names (the built-in synthetic set when ``data`` is empty; ``base`` when given), query
    filters and data transforms applied."""
    ds = base if base is not None else load_npz(cfg.data) if cfg.data else load_or_make_default()
    ds, counts = filter_queries(ds, require_positive_query=cfg.require_positive_query,
                                min_group_size=cfg.min_group_size)
    if counts["dropped_small_group"] or counts["dropped_no_positive"]:
        printer(f"filters: kept {counts['kept']} of {counts['queries_in']} queries "
                f"({counts['dropped_small_group']} with fewer than {cfg.min_group_size} trajectories, "
                f"{counts['dropped_no_positive']} without a positive)")
    if cfg.data_transform != "none" or cfg.data_queries:
        ds, record = curate(ds, cfg.data_transform, queries=cfg.data_queries, seed=cfg.data_queries_seed)
        t = record["train"]
        printer(f"data transform {cfg.data_transform}" + (f", {cfg.data_queries} queries" if cfg.data_queries else "")
                + f": {t['queries']} training queries, {t['trajectories']} trajectories, positive share "
                f"{t['positive_share']:.3f}")
    printer(f"data: {cfg.data or ('the given data set' if base is not None else 'built-in synthetic set')} — {ds.num_queries} queries, K={ds.pool_size}, "
            f"M={ds.max_trajectories}, S={ds.num_steps}, d={ds.dim}")
    note = recipe_note(ds, cfg)
    if note:
        printer(note)
    return ds


def recipe_note(ds, cfg: config_lib.Config) -> str:
    """A line when ``ds`` is a simulator preset's data set and ``cfg`` trains it otherwise than the preset is
    calibrated (its ``recipe``; :class:`leverjax.data.synth.Preset`), else ''. The run goes on as configured."""
    preset, recipe = preset_recipe(ds)
    differ = {k: v for k, v in recipe.items() if hasattr(cfg, k) and getattr(cfg, k) != v}
    if not differ:
        return ""
    return (f"note: preset {preset!r} is calibrated under {recipe_flags(differ)}; this run uses "
            + ", ".join(f"{k}={getattr(cfg, k)}" for k in sorted(differ))
            + " (docs/data.md: its effects then differ from the calibrated sizes)")


def _data_key(cfg: config_lib.Config) -> tuple:
    """What selects a data set: its file, the query filters and the transforms."""
    return (cfg.data, cfg.require_positive_query, cfg.min_group_size, cfg.data_transform, cfg.data_queries,
            cfg.data_queries_seed)


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
    from leverjax.core import baselines, rewards
    from leverjax.data.diagnose import diagnose

    try:
        previous = {e.get("fingerprint"): e for e in read_json(os.path.join(root, "baselines.json")).get("sets", [])}
    except AttributeError:  # no previous file (or not the expected shape)
        previous = {}
    out = []
    for entry in sets:
        cfg, ds = entry["config"], entry["dataset"]
        reward = {k: getattr(cfg, k) for k in ("reward_mode", "w_hard", "w_soft", "w_rel")}
        fingerprint = short_hash([BASELINES_VERSION, data_fingerprint(ds), reward, cfg.eval_shots], 16)
        head = {"fingerprint": fingerprint, "data": cfg.data, "require_positive_query": cfg.require_positive_query,
                "min_group_size": cfg.min_group_size, "data_transform": cfg.data_transform,
                "data_queries": cfg.data_queries, "data_queries_seed": cfg.data_queries_seed,
                "diagnosis": diagnose(ds, "train"), "reward": reward, "variants": entry["variants"]}
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
                 on_start: Callable[["CompileTimer"], None], on_epoch: Callable[[dict], None]) -> dict:
    """Trains the runs ``todo`` of ``group`` (one vmapped program) and writes their statuses, ``results.json``
    and, unless kept, deletes their checkpoints. Returns the outcome: ``state`` (done | failed), ``reason``
    (failed), ``seconds``, ``compile_seconds``, ``statuses`` (run name -> status record) and ``records`` (per
    run: history, final metrics, failure). A failure of the group is recorded, not raised (except with
    several cooperating processes, which could go on out of step)."""
    paths = Paths(job.out)
    specs = run_specs(todo[0].config, todo)
    directory = f"{group.id}-{group.key}-{short_hash([(r.name, r.config_hash) for r in todo], 6)}"
    rel = os.path.join("runs", directory)
    for run in todo:
        write_status(paths, run, "running", init_from=job.init_from, group=group.id, directory=rel, pid=os.getpid())
    t0 = time.perf_counter()
    with CompileTimer() as timer:
        on_start(timer)
        try:
            runner = Runner(todo[0].config, ds, specs, name=directory, workdir=paths.runs,
                            out=printer if job.tables else (lambda s: None), on_nonfinite="record",
                            devices=devices, on_epoch=on_epoch, restart=job.restart,
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
            statuses = {run.name: write_status(paths, run, "failed", init_from=job.init_from, kind="error",
                                                reason=reason, group=group.id, directory=rel) for run in todo}
            return {"state": "failed", "reason": reason, "seconds": time.perf_counter() - t0,
                    "compile_seconds": timer.seconds, "statuses": statuses, "records": None}
    seconds = time.perf_counter() - t0
    records = write_group_results(job.out, rel, todo, specs, results, job.provenance)
    statuses = {}
    for j, run in enumerate(todo):
        failure = results.failures.get(j)
        if failure:
            statuses[run.name] = write_status(paths, run, "failed", init_from=job.init_from, kind="diverged",
                                               reason=failure["reason"], failure=failure, group=group.id,
                                               directory=rel)
            printer(f"»» {run.name} diverged: {failure['reason']} (recorded; the other runs went on)")
        else:
            statuses[run.name] = write_status(paths, run, "done", init_from=job.init_from, group=group.id,
                                               directory=rel)
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
    key = _data_key(cfg)
    if key not in _WORKER_DATASETS:
        _WORKER_DATASETS[key] = load_dataset(cfg, printer=lambda s: None, base=dataset)  # the launcher has said it
    dataset = _WORKER_DATASETS[key]
    try:
        return _train_group(job, group, todo, dataset, None, lambda line: emit(("print", line)),
                            on_start=lambda timer: None, on_epoch=lambda info: emit(("epoch", info)))
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


def _prefix_key(run: GridRun, through: str, init_from: str | None, data_of: Callable[[config_lib.Config], str]) -> str:
    """The run's prefix key (:func:`leverjax.run.keys.prefix_key`, the one the runner's prefix cache uses);
    ``data_of(config)`` is the fingerprint of the data set the run trains on."""
    return prefix_key(run.config, run.seed, through, data_of(run.config), init_from)


def _prefix_dependencies(groups: Sequence[Group], pending: Mapping[str, list[GridRun]], init_from: str | None,
                         data_of: Callable[[config_lib.Config], str]) -> dict[str, set[str]]:
    """For each group, the earlier groups it should wait for: the first group with a run of the same SFT
    prefix (same data, seed and SFT-phase config) trains it into the prefix cache, and a later group that
    starts while it trains would train it again (the result is the same, the time is lost)."""
    first: dict[str, str] = {}
    depends: dict[str, set[str]] = {}
    for group in groups:
        depends[group.id] = set()
        for run in pending[group.id]:
            producer = first.setdefault(_prefix_key(run, "sft", init_from, data_of), group.id)
            if producer != group.id:
                depends[group.id].add(producer)
    return depends


def _expected_run_epochs(groups: Sequence[Group], pending: Mapping[str, list[GridRun]], init_from: str | None,
                         data_of: Callable[[config_lib.Config], str]) -> dict[str, int]:
    """Per group, the run-epochs it will train: a run whose SFT/RCE (or SFT) prefix an earlier run of the
    grid trains starts after it (for the progress lines' estimate of the time left)."""
    seen: dict[str, set[str]] = {"sft": set(), "rce": set()}
    units = {}
    for group in groups:
        units[group.id] = 0
        for run in pending[group.id]:
            cfg, keys = run.config, {k: _prefix_key(run, k, init_from, data_of) for k in seen}
            skip = cfg.sft_epochs + cfg.rce_epochs if keys["rce"] in seen["rce"] else \
                cfg.sft_epochs if keys["sft"] in seen["sft"] else 0
            units[group.id] += run_epochs(cfg) - skip
            for k in seen:
                seen[k].add(keys[k])
    return units


def run_grid(names: Sequence[str], overrides: Mapping[str, Any] | None = None,
             sweep: Mapping[str, Sequence[Any]] | None = None, *, seeds: int | None = None, out: str | None = None,
             restart: bool = False, baseline: str | None = None, dataset=None, devices: Sequence | None = None,
             report: Callable[..., str] | None = None, tables: bool = True,
             printer: Callable[[str], None] | None = None,
             experiment_overrides: Mapping[str, Mapping[str, Any]] | None = None,
             keep_checkpoints: bool = False, init_from: str | None = None, load_init: Callable | None = None,
             prefix_cache: str | None = None, wandb_project: str | None = None,
             command: str | None = None, workers: int | None = None) -> GridResult:
    """Trains the grid (see the module docstring) into ``out`` and writes its metrics and summary.

    ``dataset``: a :class:`~leverjax.data.Dataset` to train every group on instead of loading each config's
    ``data`` (its query filters and data transforms still apply). ``devices``: the devices the run axis is
    sharded over (default: all of ``jax.devices()``).
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
    if init_from and not os.path.exists(init_from):
        raise ConfigError(f"--init_from={init_from!r}: no such file or folder")
    if baseline and baseline not in grid.experiments and baseline not in {r.variant for r in grid.runs}:
        raise ConfigError(f"--baseline={baseline!r} is not a run of this grid; runs: "
                          f"{', '.join(dict.fromkeys(r.variant for r in grid.runs))}")
    out = out or default_out(grid.experiments, grid.overrides, grid.sweep)
    distributed.agree("grid", {"grid": grid.to_json(), "out": out, "restart": restart, "baseline": baseline,
                               "devices": len(devices) if devices is not None else None,
                               "checkpoints": keep_checkpoints}, what="command (resolved grid)")
    paths = Paths(out)
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
        key = _data_key(cfg)
        if key not in datasets:
            datasets[key] = load_dataset(cfg, printer, base=dataset)
        return datasets[key]

    fingerprints: dict[tuple, str] = {}

    def data_of(cfg: config_lib.Config) -> str:
        key = _data_key(cfg)
        if key not in fingerprints:
            fingerprints[key] = data_fingerprint(dataset_for(cfg))
        return fingerprints[key]

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
            statuses[run.name] = write_status(paths, run, "failed", init_from=init_from, kind="config",
                                            reason=run.error)
    pending = {g.id: [r for r in g.runs if not is_finished(statuses[r.name], r, out, init_from)] for g in grid.groups}
    for group in grid.groups:
        for run in pending[group.id]:
            statuses[run.name] = write_status(paths, run, "pending", init_from=init_from, group=group.id)
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
    progress = Progress(grid, pending, finished, _expected_run_epochs(to_train, pending, init_from, data_of), printer,
                         quiet=not many)
    tb = tracking.TensorBoardLogs(out)
    group_log: list[dict] = []
    job = _GroupJob(out=out, prefix_cache=prefix_cache, restart=restart, init_from=init_from, load_init=load_init,
                    tables=tables, keep_checkpoints=keep_checkpoints, provenance=prov)
    index_of = {g.id: i for i, g in enumerate(grid.groups, 1)}
    for group in grid.groups:
        if not pending[group.id]:
            group_log.append({"id": group.id, "experiments": group.experiments, "runs": 0, "state": "skipped"})
    workers = _resolve_workers(workers, len(to_train), devices_given)
    if workers > 1:
        printer(f"grid: training up to {workers} groups at once, each in a process of its own (--workers)")

    def record_epoch(group: Group, info: dict) -> None:
        progress.epoch(group.id, info)
        if distributed.is_primary():
            for rec in info.get("records", ()):
                tb.epoch(rec["run"], info["epochs_done"], rec["phase"], rec)

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
                printer(f"»» group {group.id} done in {fmt_seconds(outcome['seconds'])} "
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
                statuses_lost = {run.name: write_status(paths, run, "failed", init_from=init_from, kind="error",
                                                         reason=reason, group=group_id) for run in pending[group_id]}
                group_ended(by_id[group_id], {"state": "failed", "reason": reason, "seconds": 0.0,
                                              "compile_seconds": 0.0, "statuses": statuses_lost, "records": None})

            workers_lib.run_tasks(
                {g.id: (g, pending[g.id]) for g in to_train}, workers=workers, worker_fn=_train_group_in_worker,
                worker_args=(job, dataset), depends=_prefix_dependencies(to_train, pending, init_from, data_of),
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
                    on_epoch=lambda info, group=group: record_epoch(group, info))
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
                        summary["summary"], summary["final_split"], summary.get("undefined", {}))
    print_summary(result, printer)
    return result


