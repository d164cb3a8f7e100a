"""Reading a results directory: every run's per-epoch and final metrics from ``metrics.csv``, the grid's
configs, the reference selections, failures and the final split, gathered in one :class:`Context`."""
from __future__ import annotations

import csv
import dataclasses
import glob
import math
import os
import re
from typing import Callable, Sequence

from leverjax.fileio import read_json
from leverjax.report.estimates import Estimate, _mean, estimate, paired

PHASE_ORDER = ("sft", "rce", "grpo_positive", "grpo")


ORACLE_MEAN = "val_oracle_acc_mean"  # a derived metric: the mean of the logged shots' oracle accuracies


def oracle_shots(keys, split: str = "val") -> list[int]:
    """The shot counts n of the ``<split>_oracle_acc_<n>`` metrics among ``keys`` (not ``..._adaptive``)."""
    return sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(rf"{split}_oracle_acc_(\d+)", k))})


_PROPORTIONS = ("greedy_labelled", "changed_vs_ref", "zero_var_frac", "oracle_acc")


_NONNEGATIVE = ("kl", "beta", "adv_std")


REFERENCE_NAMES = {"random": "random selection (from the pool)",
                   "random_all": "random demonstrations (whole set; the original's baseline)",
                   "similarity": "similarity retrieval",
                   "best_labelled": "best labelled trajectory", "oracle_greedy": "oracle greedy (ceiling)"}


def is_grpo(phase: str) -> bool:
    return phase.startswith("grpo")


def bounds_of(metric: str, scale: float = 1.0) -> tuple[float, float] | None:
    """The range of a metric after ``scale``: [0, scale] for proportions, [0, ∞) for KL, β and advantage
    std, None for unbounded metrics."""
    base = re.sub(r"^(best_test_|test_|val_|train_)", "", metric)
    if base.startswith(_PROPORTIONS) or metric == ORACLE_MEAN:
        return (0.0, scale)
    if base in _NONNEGATIVE:
        return (0.0, math.inf)
    return None


@dataclasses.dataclass
class Run:
    """One seed of one variant: its per-epoch records and final test metrics."""

    variant: str
    experiment: str
    seed: int
    group: str
    overrides: str
    epochs: dict = dataclasses.field(default_factory=dict)  # (phase, epoch) -> {metric: value}
    final: dict = dataclasses.field(default_factory=dict)  # metric -> value

    def ordered_epochs(self) -> list[tuple[str, int]]:
        rank = {p: i for i, p in enumerate(PHASE_ORDER)}
        return sorted(self.epochs, key=lambda pe: (rank.get(pe[0], len(rank)), pe[0], pe[1]))

    def value(self, pe: tuple[str, int], metric: str) -> float | None:
        rec = self.epochs[pe]
        if metric == ORACLE_MEAN:
            return _mean([rec[f"val_oracle_acc_{n}"] for n in oracle_shots(rec)])
        return rec.get(metric)

    def series(self, metric: str) -> list[tuple[int, str, float]]:
        """``(global epoch, phase, value)`` of ``metric`` over every epoch that has it."""
        out = []
        for i, pe in enumerate(self.ordered_epochs()):
            v = self.value(pe, metric)
            if v is not None:
                out.append((i + 1, pe[0], v))
        return out

    def grpo_curve(self, metric: str) -> dict[int, float]:
        """``metric`` by GRPO epoch: 0 is the last epoch before GRPO, then 1, 2, ... across GRPO phases
        (``val_oracle_acc_mean``: the mean over the logged shots)."""
        out, n = {}, 0
        for pe in self.ordered_epochs():
            v = self.value(pe, metric)
            if v is None:
                continue
            if is_grpo(pe[0]):
                n += 1
                out[n] = v
            elif n == 0:
                out[0] = v
        return out


def load_runs(csv_path: str) -> dict[str, dict[int, Run]]:
    """variant -> seed -> :class:`Run`, in the CSV's order of first appearance."""
    runs: dict[str, dict[int, Run]] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        # results written before the column was named for what it holds call it "run"
        column = "run" if "run" in (reader.fieldnames or ()) and "variant" not in reader.fieldnames else "variant"
        for row in reader:
            seed, variant = int(row["seed"]), row[column]
            run = runs.setdefault(variant, {}).get(seed)
            if run is None:
                run = Run(variant, row["experiment"], seed, row["group"], row.get("overrides", ""))
                runs[variant][seed] = run
            value = float(row["value"])
            if row["phase"] == "final":
                run.final[row["metric"]] = value
            else:
                run.epochs.setdefault((row["phase"], int(row["epoch"])), {})[row["metric"]] = value
    return runs


REWARD_FIELDS = ("reward_mode", "w_hard", "w_soft", "w_rel")


def variant_configs(grid: dict | None) -> dict[str, dict]:
    """variant -> the config of its first run, from ``grid.json``."""
    out: dict[str, dict] = {}
    for run in (grid or {}).get("runs", []):
        if run.get("config"):
            out.setdefault(run["variant"], run["config"])
    return out


def load_reward_definitions(directory: str) -> dict[str, tuple]:
    """variant -> its reward definition (mode and weights), from ``grid.json`` when it is there."""
    configs = variant_configs(read_json(os.path.join(directory, "grid.json")))
    return {v: tuple(c.get(k) for k in REWARD_FIELDS) for v, c in configs.items()}


def load_failures(directory: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "status", "*.json"))):
        st = read_json(path)
        if isinstance(st, dict) and st.get("state") == "failed":
            out.append(st)
    grid = read_json(os.path.join(directory, "grid.json"))
    if out and isinstance(grid, dict):  # only the current grid's runs
        try:
            names = {r["name"]: r["config_hash"] for r in grid["runs"]}
            out = [s for s in out if names.get(s.get("run")) == s.get("config_hash")]
        except (KeyError, TypeError):
            pass
    return out


def load_references(directory: str, baseline: str | None) -> dict | None:
    """The entry of ``baselines.json`` for the data set the baseline was trained on (else the first)."""
    data = read_json(os.path.join(directory, "baselines.json"))
    sets = (data or {}).get("sets") or []
    if not sets:
        return None
    return next((s for s in sets if baseline in s.get("variants", [])), sets[0])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")


def choose_baseline(runs: dict[str, dict[int, Run]], requested: str | None) -> str | None:
    if not runs:
        return None

    def of_experiment(name: str) -> list[str]:
        return [v for v in runs if next(iter(runs[v].values())).experiment == name]

    if requested:
        if requested in runs:
            return requested
        if of_experiment(requested):  # an experiment with a sweep: its first variant
            return of_experiment(requested)[0]
        raise ValueError(f"baseline {requested!r} is not a run of this grid; runs: {', '.join(runs)}")
    return (of_experiment("rce_only") or list(runs))[0]


@dataclasses.dataclass
class Context:
    """Everything the sections share."""

    directory: str
    runs: dict[str, dict[int, Run]]
    base: str
    oracle: bool  # synthetic data: oracle accuracies were logged
    shots: list[int]  # shots with a test oracle accuracy
    other_reward: set  # variants whose reward definition differs from the baseline's
    grid: dict | None
    references: dict | None

    def finished(self, variant: str) -> dict[int, Run]:
        return {s: r for s, r in self.runs[variant].items() if r.final}

    @property
    def base_runs(self) -> dict[int, Run]:
        return self.finished(self.base)

    def headline(self) -> tuple[str, str, float, tuple | None, Callable[[Run], float | None], str]:
        """(key, label, scale, bounds, getter, unit) of the one number each run is judged by."""
        if self.oracle:
            keys = [f"test_oracle_acc_{n}" for n in self.shots]
            return ("acc_mean", f"test oracle accuracy (mean over shots {self.shots[0]}–{self.shots[-1]})", 100.0,
                    (0.0, 100.0), lambda r: _mean([r.final.get(k) for k in keys]), " pts")
        return ("test_expected_reward", "test expected reward", 1.0, None,
                lambda r: r.final.get("test_expected_reward"), "")

    def delta(self, variant: str, get: Callable[[Run], float | None], scale: float = 1.0, bounds=None) -> Estimate:
        return paired(self.finished(variant), self.base_runs, get, scale, bounds)

    def seeds(self, variant: str) -> int:
        return len(self.finished(variant))


def _context(directory: str, baseline: str | None) -> Context:
    runs = load_runs(os.path.join(directory, "metrics.csv"))
    base = choose_baseline(runs, baseline)
    finals = {m for seeds in runs.values() for r in seeds.values() for m in r.final}
    shots = oracle_shots(finals, "test")
    grid = read_json(os.path.join(directory, "grid.json"))
    rewards = load_reward_definitions(directory)
    other = {v for v in runs if base in rewards and v in rewards and rewards[v] != rewards[base]}
    return Context(directory, runs, base, bool(shots), shots, other, grid if isinstance(grid, dict) else None,
                   load_references(directory, base))


def group_results(directory: str) -> list[dict]:
    """Every group's ``runs/<group>/results.json`` of a results directory that is on disk, in group order."""
    runs_dir = os.path.join(directory, "runs")
    groups = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    contents = (read_json(os.path.join(runs_dir, group, "results.json")) for group in groups)
    return [c for c in contents if c is not None]


def final_splits(directory: str) -> set:
    """The splits the final metrics of the grid's groups come from (``runs/*/results.json``)."""
    return {content.get("final_split", "test") for content in group_results(directory)}


def _ref_acc(refs: dict | None, split: str, name: str, n: int) -> float | None:
    """A reference selection's oracle accuracy (fraction) at ``n`` shots (None if it is missing)."""
    acc = (((refs or {}).get("splits") or {}).get(split, {}).get("oracle") or {}).get(name, {}).get("acc") or {}
    return acc.get(str(n))


def _ref_mean(refs: dict | None, split: str, name: str, shots: Sequence[int]) -> float | None:
    """A reference selection's oracle accuracy averaged over ``shots`` (None if any is missing)."""
    values = [_ref_acc(refs, split, name, n) for n in shots]
    return sum(values) / len(values) if values and all(v is not None for v in values) else None


def grid_runs(directory: str) -> list[Run]:
    """Every run (variant × seed) of a results directory's ``metrics.csv``."""
    path = os.path.join(directory, "metrics.csv")
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist (is {directory} a launcher results directory?)")
    return [run for seeds in load_runs(path).values() for run in seeds.values()]


def labelled_trajectories(directory: str) -> dict[str, int]:
    """Per variant: the labelled training trajectories of the data it trained on (``baselines.json``'s
    diagnosis). On real data each label was one VLM generation: the scorer calls a run spends before training."""
    sets = (read_json(os.path.join(directory, "baselines.json")) or {}).get("sets") or []
    out = {}
    for entry in sets:
        n = (entry.get("diagnosis") or {}).get("trajectories")
        if n is not None:
            out.update({v: int(n) for v in entry.get("variants", [])})
    return out


def training_calls(run: Run) -> float:
    """The scorer calls a run made while training (on-policy GRPO's ``train_scorer_calls`` at its last epoch;
    0 for a run that trains on fixed labels only)."""
    values = [run.epochs[pe].get("train_scorer_calls") for pe in run.ordered_epochs()]
    values = [v for v in values if v is not None]
    return float(values[-1]) if values else 0.0


def scorer_call_rows(ctx: Context) -> list[tuple[str, float, float, Estimate]]:
    """Per run: (variant, labelled training trajectories, mean scorer calls while training per seed, headline
    estimate); empty unless some run made scorer calls while training (on-policy GRPO)."""
    labels = labelled_trajectories(ctx.directory)
    _, _, scale, bounds, get, _ = ctx.headline()
    rows = []
    for variant in ctx.runs:
        finished = ctx.finished(variant)
        if not finished:
            continue
        calls = [training_calls(r) for r in finished.values()]
        rows.append((variant, labels.get(variant, 0), sum(calls) / len(calls),
                     estimate([get(r) for r in finished.values()], scale, bounds)))
    return rows if any(row[2] for row in rows) else []
