"""The command-line driver: runs of one static config, vmapped, checkpointed after every epoch.

A *run* is one set of sweepable hyperparameters plus a seed. All runs handed to :class:`Runner` share
one static config, so every phase's epoch function compiles once and trains all of them together
(``jax.vmap`` over the run axis). Between epochs the driver checks for NaN, saves an orbax
checkpoint, prints a table row and appends to the metrics history; a killed run restarted with the
same command resumes from its last checkpoint and ends with the same numbers.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from leverjax.core import config as config_lib
from leverjax.core import stats
from leverjax.core.evaluate import Evaluator
from leverjax.core.train import Pipeline
from leverjax.data.device import DeviceData
from leverjax.errors import ConfigError, LeverjaxError
from leverjax.fileio import dumps_strict, records_from_json, write_json_atomic, write_jsonl_atomic
from leverjax.run import checkpoint as ckpt_lib
from leverjax.run import distributed
from leverjax.run import keys as keys_lib
from leverjax.run.console import EpochTable


class TrainingDiverged(LeverjaxError):
    """A run produced a non-finite loss; the last good checkpoint is kept."""


def fmt_value(v: Any) -> str:
    """A config value as run names show it (floats in ``%g``)."""
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run as the engine sees it: sweepable overrides of the program's config (field -> value), a seed,
    and its name. ``variant`` is the run without its seed (seeds are replicates, averaged in summaries);
    a grid passes its own run's variant, so a run has one name everywhere; left empty, it is built from the
    experiment and the overrides."""

    overrides: tuple[tuple[str, Any], ...]
    seed: int
    experiment: str = ""
    variant: str = ""

    def __post_init__(self):
        if not self.variant:
            parts = [self.experiment] if self.experiment else []
            parts += [f"{k}={fmt_value(v)}" for k, v in self.overrides]
            object.__setattr__(self, "variant", ",".join(parts) or "-")

    @property
    def name(self) -> str:
        return f"{self.variant}/seed={self.seed}" if self.variant != "-" else f"seed={self.seed}"


def expand_runs(sweep: dict[str, Sequence[Any]], seed: int, seeds: int, experiment: str = "") -> list[RunSpec]:
    """Every combination of the (sweepable) sweep values × ``seeds`` consecutive seeds from ``seed``."""
    names = list(sweep)
    combos = list(itertools.product(*(sweep[n] for n in names))) if names else [()]
    return [RunSpec(tuple(zip(names, combo)), seed + s, experiment) for combo in combos for s in range(seeds)]


def run_hyperparameters(cfg: config_lib.Config, runs: Sequence[RunSpec]) -> dict:
    """The stacked hyperparameters ``{field: [R]}`` of ``runs`` (their overrides must be sweepable: the
    runs of one program share everything else)."""
    for run in runs:
        static = [k for k, _ in run.overrides if k not in config_lib.SWEEPABLE]
        if static:
            raise LeverjaxError(f"run {run.name} overrides {', '.join(static)}, which one compiled program cannot "
                                f"vary; sweepable fields: {', '.join(config_lib.SWEEPABLE)}")
    per_run = [config_lib.hyperparameters(config_lib.replace(cfg, dict(r.overrides))) for r in runs]
    return {k: jnp.asarray([hp[k] for hp in per_run], jnp.float32) for k in per_run[0]}


def run_keys(runs: Sequence[RunSpec]) -> jax.Array:
    return jnp.stack([jax.random.PRNGKey(r.seed) for r in runs])


def over_runs(fn: Callable, in_axes: tuple) -> Callable:
    """``jit(vmap(fn, in_axes))`` over the leading run axis, except that a single run (a run axis of length 1)
    is computed without ``vmap`` and given its axis back: a batch dimension of one still costs (about 15% of a
    GRPO epoch on the CPU, ``bench/profile_grpo.py``). The numbers are the same up to float rounding."""
    mapped = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        runs = next(jax.tree_util.tree_leaves(a)[0].shape[0] for a, axis in zip(args, in_axes) if axis is not None)
        if runs != 1:
            return mapped(*args)
        one = [a if axis is None else jax.tree_util.tree_map(lambda x: x[0], a) for a, axis in zip(args, in_axes)]
        return jax.tree_util.tree_map(lambda x: jnp.expand_dims(x, 0), fn(*one))

    return jax.jit(call)


class VmappedPipeline:
    """The pipeline's pure functions jitted once and vmapped over the run axis (:func:`over_runs`)."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe
        self.evaluator = evaluator = Evaluator(pipe)
        self.init = over_runs(pipe.init_state, (None, 0, 0))
        self.begin = [over_runs(functools.partial(pipe.begin_phase, i), (0, None, 0)) for i in range(len(pipe.phases))]
        self.epoch = [over_runs(functools.partial(pipe.train_epoch, i), (0, None, None, 0))
                      for i in range(len(pipe.phases))]
        # Evaluation is one program shared by every phase (compiled once, not once per phase).
        self.validate = over_runs(evaluator.validate_epoch, (0, None, None, 0))
        self.final = over_runs(evaluator.final_evaluation_and_questions, (0, None, 0))

    def abstract_state(self, phase_index: int, data, hp, keys):
        """Shapes and dtypes of the state during phase ``phase_index`` (the restore target)."""
        def fn(hp, keys):
            return self.begin[phase_index](self.init(data, hp, keys), data, hp)
        return jax.eval_shape(fn, hp, keys)


# The part of the state evaluation reads and updates: the same structure in every phase, so the
# evaluation program compiles once (the optimizer state's structure differs between phases).
TRACKED_KEYS = ("params", "ref_val_picks", "best_params", "best_value", "best_epoch")
# The training state's structure, saved with every checkpoint (absent: 1). 2 added the reference policy's
# val picks (``ref_val_picks``). A checkpoint of another layout cannot be resumed.
STATE_LAYOUT = 2
_COMPILED: dict = {}


def release_compiled() -> None:
    """Drops every compiled program of this process (the shared pipelines and jit's caches). Each XLA CPU
    executable keeps its machine code mapped, and a process may hold at most ``vm.max_map_count`` mappings
    (65,530 by default on Linux): a grid of 31 groups in one process died in its 20th (``LLVM compilation
    error: Cannot allocate memory``) with most of the machine's memory free. The launcher calls this after
    every group; the on-disk compilation cache keeps a later recompile of the same program cheap."""
    _COMPILED.clear()
    jax.clear_caches()


def compiled_pipeline(cfg: config_lib.Config, dataset) -> VmappedPipeline:
    """The jitted, vmapped pipeline for ``cfg``'s static part on ``dataset``, shared by every runner
    with the same static signature (so a second runner of the same shapes compiles nothing)."""
    key = (config_lib.static_signature(cfg), id(dataset))
    if key not in _COMPILED or _COMPILED[key][0] is not dataset:
        _COMPILED[key] = (dataset, VmappedPipeline(Pipeline(cfg, dataset)))
    return _COMPILED[key][1]


@dataclasses.dataclass
class Results:
    runs: list[RunSpec]
    history: list[dict]  # one record per phase, epoch and run
    final: list[dict]  # test metrics per run
    summary: dict  # variant -> metric -> (mean, ci)
    state: Any  # the final vmapped training state
    directory: str | None
    failures: dict = dataclasses.field(default_factory=dict)  # run index -> why it diverged (on_nonfinite="record")
    final_split: str | None = "test"  # the split of the final metrics (val when the data has no test queries)
    questions: list | None = None  # per run: every counted test question's realised scores (synthetic data)


class Runner:
    """Trains ``runs`` of one static ``cfg`` on ``dataset``; writes under ``workdir/name`` if given.

    ``on_nonfinite``: ``"raise"`` stops everything with :class:`TrainingDiverged` at the first non-finite
    loss; ``"record"`` notes the run's failure (``Results.failures``) and lets the other runs go on.
    ``devices``: with more than one, the run axis is sharded over a mesh of them (runs padded with copies
    of the last run to a multiple of the device count; the copies never reach the results).
    ``on_epoch``: called after every epoch with a progress record (phase, epoch, epochs done/total, seconds) and
    the epoch's metric records of every run (``records``).
    ``prefix_cache``: a folder where each run's state after each phase before GRPO (after SFT, after RCE;
    the whole run when it has no GRPO phase) is kept, keyed by everything that determines it (the config
    fields that act up to that phase, the seed, the data, ``init_from``); a later runner whose runs all
    find their key there starts after the longest such prefix (at GRPO; at RCE when only the SFT matches;
    a run without GRPO at its final evaluation) instead of recomputing it (equal up to float rounding when
    the earlier group had another number of runs). Runs of this runner that share a prefix key train that
    prefix once: a runner of one run per distinct key trains the SFT/RCE phases into the cache first
    (``stop_at_prefix``), and every run then starts at GRPO from it.
    Entries appear whole (written aside, then renamed), so several runners may share one cache at once.
    """

    def __init__(self, cfg: config_lib.Config, dataset, runs: Sequence[RunSpec], *, name: str = "run",
                 workdir: str | None = None, restart: bool = False, out: Callable[[str], None] | None = None,
                 extra_meta: dict | None = None, init_from: str | None = None, load_init: Callable | None = None,
                 on_nonfinite: str = "raise",
                 devices: Sequence | None = None, on_epoch: Callable[[dict], None] | None = None,
                 prefix_cache: str | None = None, stop_at_prefix: bool = False):
        if on_nonfinite not in ("raise", "record"):
            raise LeverjaxError(f"on_nonfinite={on_nonfinite!r} must be 'raise' or 'record'")
        self.cfg = cfg
        self.runs = list(runs)
        self.name = name
        self.on_nonfinite = on_nonfinite
        self.on_epoch = on_epoch
        self.failures: dict[int, dict] = {}
        self.vp = compiled_pipeline(cfg, dataset)
        self.pipe = self.vp.pipe
        self.data = DeviceData.from_dataset(dataset)
        self.mesh = Mesh(np.asarray(list(devices)), ("runs",)) if devices is not None and len(devices) > 1 else None
        padded = self.runs
        if self.mesh is not None:
            padded = self.runs + [self.runs[-1]] * (-len(self.runs) % self.mesh.size)
        self.num_padded = len(padded)
        self.hp = run_hyperparameters(cfg, padded)
        self.keys = run_keys(padded)
        if self.mesh is not None:
            self.data = distributed.put(self.data, NamedSharding(self.mesh, PartitionSpec()))
            self.hp = distributed.put(self.hp, self.run_sharding)
            self.keys = distributed.put(self.keys, self.run_sharding)
        self.out = out or ((lambda s: print(s, flush=True)) if distributed.is_primary() else (lambda s: None))
        self.directory = os.path.join(workdir, name) if workdir else None
        self.extra_meta = extra_meta or {}
        self.store = None
        self._init_params = None
        self.prefix_cache = prefix_cache
        self._init_from = init_from
        self._load_init = load_init
        self.reuse_prefix = not restart  # --restart recomputes the prefix (and replaces the cached one)
        self.stop_at_prefix = stop_at_prefix
        self._dataset, self._devices, self._restart = dataset, devices, restart
        if init_from:  # checked before anything is written, so a bad file leaves no trace
            self.init_from(init_from)
        if self.directory:
            if restart and os.path.isdir(self.directory) and distributed.is_primary():
                shutil.rmtree(self.directory)
            distributed.barrier("runner-restart")
            os.makedirs(self.directory, exist_ok=True)
            self._check_config()
            self.store = ckpt_lib.CheckpointStore(self.directory)
            if self.pipe.reward_model is not None and distributed.is_primary():
                # on-policy GRPO's learned scorer: how well it predicts the held-out labels
                write_json_atomic(os.path.join(self.directory, "reward_model.json"),
                                  {"held_out": "val split", **self.pipe.reward_model_calibration()})

    def init_from(self, path: str, run_index: int = 0) -> None:
        """Starts every run from the parameters at ``path`` instead of a fresh initialisation.

        ``path`` is a leverjax parameter folder (e.g. ``checkpoints/<experiment>/best``; with a run axis,
        run ``run_index`` is taken) or a Lever-Plus ``.pt``/``.ckpt`` file, read by the runner's ``load_init``
        (``load_init(path, selector_config, dim=, run_index=)``, e.g.
        :func:`leverjax.tools.interop.load_selector_params`, which the command line passes).
        """
        if self._load_init is None:
            raise ConfigError(f"init_from={path!r} needs a parameter reader: pass "
                              "load_init=leverjax.tools.interop.load_selector_params")
        self._init_params = self._load_init(path, self.pipe.selector.config, dim=self.data.emb.shape[-1],
                                                 run_index=run_index)

    @property
    def run_sharding(self):
        """The sharding of arrays with a leading run axis (``None`` without a mesh)."""
        return NamedSharding(self.mesh, PartitionSpec("runs")) if self.mesh is not None else None

    def _real_runs(self, tree):
        """``tree`` (leading run axis) without the padding copies."""
        if self.num_padded == len(self.runs):
            return tree
        return jax.tree_util.tree_map(lambda x: x[: len(self.runs)], tree)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _config_record(self) -> dict:
        return {"experiment": self.name, "config": config_lib.to_dict(self.cfg),
                "runs": [{"name": r.name, "experiment": r.experiment, "overrides": dict(r.overrides),
                          "seed": r.seed} for r in self.runs],
                **self.extra_meta}

    def _check_config(self) -> None:
        path = os.path.join(self.directory, "config.json")
        record = json.loads(json.dumps(self._config_record(), default=str))
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
            if stored.get("config") != record["config"] or stored.get("runs") != record["runs"]:
                raise LeverjaxError(
                    f"{self.directory} holds checkpoints of a different config or run set; pass --restart to "
                    f"start over there or --workdir=... to write elsewhere")
        distributed.barrier("runner-config-checked")  # every process has read it before process 0 rewrites it
        if distributed.is_primary():
            write_json_atomic(path, record)

    def _records(self, phase_index: int, epoch: int, metrics: dict) -> list[dict]:
        host = distributed.to_host(metrics)
        phase = self.pipe.phases[phase_index]
        return [{"phase": phase.name, "epoch": epoch + 1, "run": r.name, "variant": r.variant, "seed": r.seed,
                 **{k: float(v[j]) for k, v in host.items()}} for j, r in enumerate(self.runs)]

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> Results:
        """Trains every run (resuming from the last checkpoint if there is one); the last checkpoint is
        complete on disk when this returns or raises."""
        try:
            return self._run()
        finally:
            if self.store:
                self.store.close()

    def _run(self) -> Results:
        history: list[dict] = []
        start_phase, start_epoch = 0, 0
        state = None
        if self.store and self.store.latest_step() is not None:
            step = self.store.latest_step()
            meta = self.store.restore_meta(step)
            if meta.get("state_layout", 1) != STATE_LAYOUT:
                raise LeverjaxError(
                    f"{self.directory}: its last checkpoint (after {meta.get('phase_name')} epoch {meta.get('epoch')}) "
                    f"holds a training state of layout {meta.get('state_layout', 1)}, written by another leverjax "
                    f"version (this one writes layout {STATE_LAYOUT}); it cannot be resumed: rerun with --restart")
            state, meta = self._restore(step, meta)
            history = records_from_json(meta["history"])
            self.failures = {int(j): f for j, f in meta.get("failures", {}).items()}
            start_phase, start_epoch = meta["phase"], meta["epoch"]
            if start_epoch >= self.pipe.phases[start_phase].epochs:
                start_phase, start_epoch = start_phase + 1, 0
            self.out(f"resuming {self.name} from its checkpoint after {meta['phase_name']} epoch {meta['epoch']}")
        else:
            state = self.vp.init(self.data, self.hp, self.keys)
            if self._init_params is not None:
                state = _with_params(state, self._init_params, self.pipe, self.data)
            if self.mesh is not None:
                state = distributed.put(state, self.run_sharding)
            reused = self._load_prefix(state)
            if (reused is None or reused[2] < self._prefix_end()) and self._train_shared_prefix():
                reused = self._load_prefix(state, fresh=True)
            if reused is not None:
                state, history, start_phase = reused

        prefix_end = self._prefix_end()
        self._write_metrics(history)  # what the checkpoint or the prefix holds (drops epochs after a checkpoint)
        last_save = time.perf_counter()
        global_epoch = sum(p.epochs for p in self.pipe.phases[:start_phase]) + start_epoch
        total_epochs = sum(p.epochs for p in self.pipe.phases)
        for i in range(start_phase, len(self.pipe.phases)):
            phase = self.pipe.phases[i]
            first = start_epoch if i == start_phase else 0
            if first == 0:
                state = self.vp.begin[i](state, self.data, self.hp)
                if self.mesh is not None:
                    state = jax.device_put(state, self.run_sharding)
            table = EpochTable(self.vp.evaluator, i, len(self.runs), self.out)
            table.header()
            for e in range(first, phase.epochs):
                t0 = time.perf_counter()
                new_state, train = self.vp.epoch[i](state, jnp.int32(e), self.data, self.hp)
                tracked, val = self.vp.validate({k: new_state[k] for k in TRACKED_KEYS}, jnp.int32(e), self.data, self.hp)
                new_state = {**new_state, **tracked}
                if self.mesh is not None:  # one input sharding for every epoch: the epoch program compiles once
                    new_state = jax.device_put(new_state, self.run_sharding)
                metrics = {**train, **val}
                records = self._records(i, e, metrics)
                self._nan_guard(phase.name, e, records)
                state = new_state
                history.extend(records)
                self._write_metrics(records, append=True)
                global_epoch += 1
                table.row(e, records, time.perf_counter() - t0)
                if self.on_epoch:
                    self.on_epoch({"phase_index": i, "phase": phase.name, "epoch": e + 1, "phase_epochs": phase.epochs,
                                   "runs": len(self.runs),
                                   "epochs_done": global_epoch, "epochs_total": total_epochs,
                                   "seconds": time.perf_counter() - t0, "records": records})
                if len(self.failures) == len(self.runs):
                    self.out(f"every run of {self.name} diverged: its training stops here")
                    return Results(self.runs, history, [], {}, None, self.directory, dict(self.failures))
                due = (e + 1) % self.cfg.checkpoint_every == 0 and \
                    time.perf_counter() - last_save >= self.cfg.checkpoint_seconds
                if self.store and (due or e + 1 == phase.epochs):
                    self._save(global_epoch, state, i, e + 1, history)
                    last_save = time.perf_counter()
            if i < prefix_end:
                self._save_prefix(state, history, i + 1)
                if i + 1 == prefix_end and self.stop_at_prefix:
                    return Results(self.runs, history, [], {}, None, self.directory, dict(self.failures))
        final, questions = distributed.to_host(self.vp.final(state, self.data, self.hp))
        final_records = [{"run": r.name, "variant": r.variant, "seed": r.seed, **{k: float(v[j]) for k, v in final.items()}}
                         for j, r in enumerate(self.runs)]
        summary = stats.summarize(final_records, "variant")
        if self.directory:
            for folder, key in (("best", "best_params"), ("final", "params")):
                ckpt_lib.save_params(os.path.join(self.directory, folder), self._real_runs(state[key]),
                                     self._config_record())
        return Results(self.runs, history, final_records, summary, self._real_runs(state), self.directory,
                       dict(self.failures), self.vp.evaluator.final_split, self._question_scores(questions))

    def _question_scores(self, scores: dict) -> list[dict] | None:
        """Per run, the realised score of every counted final-split question at each shot (``queries``: their
        query rows), from the final evaluation's per-question ``scores``; None on data without realised scores."""
        if not self.vp.pipe.has_realised:
            return None
        rows = np.asarray(self.vp.evaluator.question_rows())
        out = []
        for j in range(len(self.runs)):
            counted = np.asarray(scores["counted"][j], bool)
            out.append({"queries": rows[counted].tolist(),
                        **{k: np.round(np.asarray(v[j], np.float64)[counted], 4).tolist()
                           for k, v in scores.items() if k != "counted"}})
        return out

    # -- reuse of a shared SFT/RCE prefix --------------------------------------------------------
    # The best-epoch tracking is kept too: a run without GRPO is evaluated on its best parameters, and a
    # GRPO run keeps the prefix's best ones until its first finite validation value.
    _PREFIX_KEYS = ("params", "rng", "ref_params", "ref_logp", "ref_val_picks", "best_params", "best_value",
                    "best_epoch")

    def _prefix_end(self) -> int:
        """Number of phases before the first GRPO phase, all of them in a run without GRPO (0: nothing
        to share)."""
        kinds = [p.kind for p in self.pipe.phases]
        return kinds.index("grpo") if "grpo" in kinds else len(kinds)

    @functools.cached_property
    def _data_digest(self) -> str:
        return keys_lib.data_fingerprint(self.pipe.dataset)

    def _prefix_keys(self, end: int | None = None) -> list[str]:
        """One key per (padded) run: equal keys reach equal states after the first ``end`` phases (default:
        the whole prefix)."""
        end = self._prefix_end() if end is None else end
        through = self.pipe.phases[end - 1].kind
        assert [(p.name, p.epochs) for p in self.pipe.phases[:end]] == keys_lib.prefix_phases(self.cfg, through)
        return [keys_lib.prefix_key(config_lib.replace(self.cfg, dict(run.overrides)), run.seed, through,
                                    self._data_digest, self._init_from)
                for run in self.runs + [self.runs[-1]] * (self.num_padded - len(self.runs))]

    def _train_shared_prefix(self) -> bool:
        """Trains the prefix of each distinct prefix key among the runs once, into the cache (by a runner of
        one run per key that stops at the prefix); returns whether it did. Nothing to share: False."""
        if not self.prefix_cache or self._prefix_end() == 0 or self.stop_at_prefix:
            return False
        keys = self._prefix_keys()[: len(self.runs)]
        first = [keys.index(k) for k in dict.fromkeys(keys)]
        if len(first) == len(self.runs):
            return False
        names = ", ".join(p.name for p in self.pipe.phases[:self._prefix_end()])
        self.out(f"{len(self.runs)} runs share {len(first)} distinct {names} prefix(es): training each once")
        child = Runner(self.cfg, self._dataset, [self.runs[j] for j in first], name="shared_prefix",
                       workdir=self.directory, restart=self._restart, out=self.out, init_from=self._init_from,
                       on_nonfinite=self.on_nonfinite, devices=self._devices, on_epoch=self.on_epoch,
                       prefix_cache=self.prefix_cache, stop_at_prefix=True)
        child.name = f"{self.name}/shared_prefix"  # in messages (its folder is <group>/shared_prefix)
        child.run()
        distributed.barrier("shared-prefix-done")
        if child.directory and distributed.is_primary():
            shutil.rmtree(child.directory, ignore_errors=True)
        return True

    def _load_prefix(self, state, fresh: bool = False):
        """``(state, history, first phase to train)`` after the longest prefix that every run finds cached
        (all phases before GRPO, else SFT alone), else ``None`` (``fresh``: the cache was just written for
        these runs, so it is read even under ``restart``)."""
        if not self.prefix_cache or self._prefix_end() == 0 or not (self.reuse_prefix or fresh):
            return None
        for end in range(self._prefix_end(), 0, -1):
            paths = [os.path.join(self.prefix_cache, key) for key in self._prefix_keys(end)]
            if distributed.broadcast("prefix-found", all(os.path.isdir(p) for p in paths)):
                break
        else:
            return None
        loaded = [ckpt_lib.load_params(p) for p in paths]
        stacked = {k: jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]),
                                             *[tree[k] for tree, _ in loaded]) for k in self._PREFIX_KEYS}
        stacked["rng"] = stacked["rng"].astype(state["rng"].dtype)
        stacked = jax.tree_util.tree_map(lambda new, old: new.reshape(old.shape).astype(old.dtype),
                                         stacked, {k: state[k] for k in self._PREFIX_KEYS})
        if self.mesh is not None:
            stacked = distributed.put(stacked, self.run_sharding)
        state = {**state, **stacked}
        history = [{**rec, "run": r.name, "variant": r.variant, "seed": r.seed}
                   for r, (_, meta) in zip(self.runs, loaded) for rec in records_from_json(meta["records"])]
        history.sort(key=lambda rec: [p.name for p in self.pipe.phases].index(rec["phase"]) * 10**6 + rec["epoch"])
        names = ", ".join(p.name for p in self.pipe.phases[:end])
        self.out(f"reusing the {names} phases of earlier runs with the same prefix config and seed "
                 f"({self.prefix_cache})")
        return state, history, end

    def _save_prefix(self, state, history: list[dict], end: int) -> None:
        """Stores every run's state and records after its first ``end`` phases, for :meth:`_load_prefix`."""
        if not self.prefix_cache:
            return
        host = distributed.to_host({k: state[k] for k in self._PREFIX_KEYS})
        keys = self._prefix_keys(end)
        todo = []
        for j, key in enumerate(keys[:len(self.runs)]):
            if j not in self.failures and key not in {keys[i] for i in todo} and \
                    not (self.reuse_prefix and os.path.isdir(os.path.join(self.prefix_cache, key))):
                todo.append(j)
        # Several processes save every entry together (process 0 decides which, as it sees the folder).
        # Each entry is written aside (under .partial/, a name no other writer uses) and moved into place in
        # one rename: runs elsewhere sharing this cache only ever find whole entries.
        token = distributed.broadcast("prefix-token", f"{os.getpid()}-{time.time_ns()}")
        for j in distributed.broadcast("prefix-to-save", todo):
            run, path = self.runs[j], os.path.join(self.prefix_cache, keys[j])
            partial = os.path.join(self.prefix_cache, ".partial", f"{keys[j]}-{token}")
            records = [{k: v for k, v in rec.items() if k not in ("run", "variant", "seed")}
                       for rec in history if rec["run"] == run.name]
            ckpt_lib.save_params(partial, jax.tree_util.tree_map(lambda x: np.asarray(x[j]), host),
                                 {"records": records})
            if distributed.is_primary():
                ckpt_lib.publish(partial, path, replace=not self.reuse_prefix)
            distributed.barrier("prefix-published")

    def _restore(self, step: int, meta: dict):
        """The checkpointed state, placed like a fresh one (sharded over the mesh if there is one). A
        checkpoint written with another padding (another device count) is cut to the real runs and padded
        again with copies of the last run, which is what the padding copies are at every epoch."""
        abstract = self.vp.abstract_state(meta["phase"], self.data, self.hp, self.keys)
        stored = meta.get("num_padded", len(self.runs))
        if self.mesh is None and stored == self.num_padded:
            return self.store.restore(step, abstract)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct((stored,) + tuple(s.shape[1:]), s.dtype, sharding=device), abstract)
        state, meta = self.store.restore(step, abstract)
        if stored != self.num_padded:
            n = len(self.runs)
            state = jax.tree_util.tree_map(
                lambda x: jnp.concatenate([x[:n]] + [x[n - 1:n]] * (self.num_padded - n)), state)
        if self.mesh is not None:
            state = distributed.put(state, self.run_sharding)
        return state, meta

    def _nan_guard(self, phase: str, epoch: int, records: list[dict]) -> None:
        for j, rec in enumerate(records):
            for key in ("train_loss", "val_loss"):
                if key in rec and not math.isfinite(rec[key]):
                    if self.on_nonfinite == "record":
                        if j not in self.failures:
                            self.failures[j] = {"run": rec["run"], "phase": phase, "epoch": epoch + 1, "metric": key,
                                                "value": rec[key],
                                                "reason": f"{phase} epoch {epoch + 1}: {key} is {rec[key]}"}
                        break
                    where = f" (last good checkpoint kept in {self.directory})" if self.directory else ""
                    raise TrainingDiverged(f"{phase} epoch {epoch + 1}: {key} is {rec[key]} for run {rec['run']}; "
                                           f"training stopped{where}")

    def _save(self, step: int, state, phase_index: int, epoch: int, history: list[dict]) -> None:
        meta = {"phase": phase_index, "phase_name": self.pipe.phases[phase_index].name, "epoch": epoch,
                "history": history, "state_layout": STATE_LAYOUT}
        if self.num_padded != len(self.runs):
            meta["num_padded"] = self.num_padded
        if self.failures:
            meta["failures"] = {str(j): f for j, f in self.failures.items()}
        self.store.save(step, state, meta)  # every process: orbax writes each process's shards

    def _write_metrics(self, records: list[dict], append: bool = False) -> None:
        """``metrics.jsonl`` of the run directory: rewritten with ``records`` (the history so far), or with
        ``records`` (an epoch's) appended. A line torn by a kill is replaced when the run resumes."""
        if not self.directory or not distributed.is_primary():
            return
        path = os.path.join(self.directory, "metrics.jsonl")
        if not append:
            write_jsonl_atomic(path, records)
            return
        with open(path, "a") as f:
            f.write("".join(dumps_strict(r) + "\n" for r in records))


def _with_params(state: dict, params, pipe: Pipeline, data) -> dict:
    """``state`` (vmapped) with every run's parameters, reference and best set to ``params``."""
    num_runs = jax.tree_util.tree_leaves(state["params"])[0].shape[0]
    stacked = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(jnp.asarray(x), (num_runs,) + x.shape), params)
    return {**state, **jax.vmap(lambda p: pipe.reference(p, data, log_probs=False))(stacked), "params": stacked,
            "best_params": stacked}


