"""What a run prints: the grid's progress lines with the time left, compile timers, the grid's closing
summary, and each runner's per-epoch table."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, Mapping

import jax
import numpy as np

from leverjax.core import config as config_lib
from leverjax.core import stats
from leverjax.run.results import GridResult, final_split_note

if TYPE_CHECKING:  # annotations only: the grid's records are built before anything prints
    from leverjax.core.evaluate import Evaluator
    from leverjax.run.grid import Grid, GridRun, Group


def fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int((s % 3600) // 60):02d}m"


def run_epochs(cfg: config_lib.Config) -> int:
    return cfg.sft_epochs + cfg.rce_epochs + cfg.grpo_positive_only_epochs + cfg.grpo_epochs


class Progress:
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
        eta = f", ~{fmt_seconds(left)} left" if left is not None else ""
        others = f" (+{len(self.active) - 1} more at once)" if len(self.active) > 1 else ""
        self.printer(f"»» grid: group {active['index']}/{self.groups_total} epoch {info['epochs_done']}/"
                     f"{info['epochs_total']}{others} | groups done {self.groups_done}/{self.groups_total}, runs done "
                     f"{self.runs_done}/{self.runs_total} | {fmt_seconds(time.perf_counter() - self.t0)} elapsed{eta}")

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


def _cell(mean: float | None, half: float | None) -> str:
    """A summary value (mean ± 95% CI half width); ``n/a`` where no seed defines it."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return stats.format_ci(mean, math.nan if half is None else half)


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
                printer(f"{v:<{width}}" + "".join(f"{_cell(*summary[v][k]):>22}" for k in keys))
        else:
            width = max(len(k) for k in keys) + 2
            printer(" " * width + "".join(f"{v:>24}" for v in variants))
            for k in keys:
                printer(f"{k:<{width}}" + "".join(f"{_cell(*summary[v][k]):>24}" for v in variants))
        shown = [k for k in keys if any(_cell(*summary[v][k]) == "n/a" for v in variants)]
        for k in shown:  # each undefined value's reason once, below the table
            printer(f"   n/a: {k}: {result.undefined.get(k, 'no query of the split defines it')}")
    done = sum(1 for s in result.statuses.values() if s and s.get("state") == "done")
    printer(f"\n{done} run(s) done, {len(result.failed)} failed, in {fmt_seconds(result.seconds)}; outputs in "
            f"{result.directory} (metrics.csv, summary.json" + (", report.md)" if result.report else ")"))
    for s in result.failed:
        printer(f"  failed: {s['run']}: {s.get('reason', '')}")


# Columns of the per-epoch table, per phase kind (all are means over runs).
_COLUMNS = {
    "sft": ["train_loss", "val_loss", "val_expected_reward"],
    "rce": ["train_loss", "train_tau", "val_loss", "val_expected_reward"],
    "grpo": ["train_loss", "train_ppo_loss", "train_kl", "train_beta", "train_reward", "train_adv_std", "train_zero_var_frac",
             "train_mean_ratio", "val_loss", "val_expected_reward", "val_changed_vs_ref"],
}


_SHORT = {"train_loss": "loss", "train_tau": "tau", "val_loss": "val_loss", "val_expected_reward": "val_E[r]",
          "train_ppo_loss": "ppo", "train_kl": "kl", "train_beta": "beta", "train_adv_std": "adv_std",
          "train_zero_var_frac": "zero_var", "train_reward": "reward", "train_mean_ratio": "ratio", "val_changed_vs_ref": "changed",
          "val_oracle_acc_1": "acc@1", "val_oracle_acc_2": "acc@2", "val_oracle_acc_3": "acc@3",
          "val_oracle_acc_4": "acc@4", "val_oracle_acc_adaptive": "acc@stop"}


class EpochTable:
    """Per-epoch rows with a progress bar, the live loss and the phase's key metrics."""

    def __init__(self, evaluator: Evaluator, phase_index: int, num_runs: int, out):
        self.phase = evaluator.pipe.phases[phase_index]
        names = evaluator.metric_names(phase_index)
        self.cols = [c for c in _COLUMNS[self.phase.kind] if c in names]
        self.cols += [c for c in names if c.startswith("val_oracle_acc_")]
        self.num_runs = num_runs
        self.out = out
        self.noted = False

    def header(self) -> None:
        runs = f", mean of {self.num_runs} runs" if self.num_runs > 1 else ""
        self.out(f"\n== {self.phase.name}: {self.phase.epochs} epochs × {self.phase.steps_per_epoch} steps "
                 f"of {self.phase.batch_size} queries{runs}")
        self.out(f"{'epoch':>9} {'progress':<12}" + "".join(f"{_SHORT.get(c, c):>10}" for c in self.cols) + "      time")

    def row(self, epoch: int, records: list[dict], seconds: float) -> None:
        done = (epoch + 1) / self.phase.epochs
        bar = "[" + "#" * int(round(10 * done)) + "." * (10 - int(round(10 * done))) + "]"
        vals = [float(np.nanmean([r[c] for r in records])) if any(math.isfinite(r[c]) for r in records) else math.nan
                for c in self.cols]
        self.out(f"{epoch + 1:>4}/{self.phase.epochs:<4} {bar:<12}"
                 + "".join(f"{v:>10.4g}" if math.isfinite(v) else f"{'n/a':>10}" for v in vals) + f"  {seconds:6.2f}s")
        undefined = [_SHORT.get(c, c) for c, v in zip(self.cols, vals) if not math.isfinite(v)]
        if undefined and not self.noted:  # the reason once, below the first row that has one
            self.noted = True
            self.out(f"{'':>9} n/a: {', '.join(undefined)}: no query of the split defines it (e.g. no greedy pick "
                     "is a labelled trajectory)")
