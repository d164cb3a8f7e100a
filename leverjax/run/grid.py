"""The grid: named experiments × sweeps × seeds expanded into runs, each a config with its name, and the
runs grouped by static signature into compiled groups.

A *run* (:class:`GridRun`) is one experiment, its sweep values and a seed, with its resolved config; its
*variant* is the run without the seed (the report averages over seeds). A *group* is the set of runs that
share one compiled program (the same :func:`~leverjax.core.config.static_signature`).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Mapping, Sequence

from leverjax.core import config as config_lib
from leverjax.errors import ConfigError
from leverjax.run import registry as experiments
from leverjax.run.engine import RunSpec, fmt_value
from leverjax.run.keys import short_hash

NOT_IN_RUN_NAME = config_lib.RUN_ONLY  # seeds and output places are no part of what a run is


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
            return short_hash({"experiment": self.experiment, "overrides": self.overrides, "error": self.error})
        return short_hash(config_lib.to_dict(self.config), 12)


@dataclasses.dataclass
class Group:
    """Runs sharing one static signature: one compiled program."""

    id: str  # g01, g02, ... in order of first appearance
    signature: str
    runs: list[GridRun]

    @property
    def key(self) -> str:
        return short_hash(self.signature)

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
        if field not in config_lib.FIELDS or field in NOT_IN_RUN_NAME:
            raise ConfigError(f"--sweep: {field!r} is not a config field that can be swept; fields: "
                              f"{', '.join(f for f in config_lib.FIELDS if f not in NOT_IN_RUN_NAME)}")
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
            if field in own and own[field] != value and field not in NOT_IN_RUN_NAME:
                notes.append(f"--{field}={fmt_value(value)} replaces {name}'s own {field}={fmt_value(own[field])}")
        these = {**overrides, **experiment_overrides.get(name, {})}
        shown = {k: v for k, v in these.items() if k not in NOT_IN_RUN_NAME}
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
        specs.append(RunSpec(diff, r.seed, r.experiment, r.variant))
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
            tag = f"{names[0]}+{len(names) - 1}more-{short_hash(names, 6)}"
    extra = {k: v for k, v in (overrides or {}).items() if k not in NOT_IN_RUN_NAME}
    if extra or sweep:
        tag += "-" + short_hash([extra, {k: list(v) for k, v in (sweep or {}).items()}], 6)
    return os.path.join(root, tag)
