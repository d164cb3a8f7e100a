"""``run.py``'s command line: absl flags for every config field, experiments, sweeps and seeds."""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

import experiments
from leverjax import config as config_lib
from leverjax.errors import ConfigError, exit_on_error

FLAGS = flags.FLAGS
_CONTROL = ("experiment", "list_experiments", "sweep", "restart", "init_from", "out", "baseline", "wandb_project")

flags.DEFINE_string("experiment", "scheme5_6", "Named experiment(s) to train (comma-separated for a grid, "
                    "'all' for the whole registry); see --list_experiments.")
flags.DEFINE_bool("list_experiments", False, "List the registered experiments and exit.")
flags.DEFINE_multi_string("sweep", [], "field=v1,v2,... : train every value (sweepable fields only), vmapped "
                          "in one program. Repeat the flag for a grid.")
flags.DEFINE_bool("restart", False, "Discard existing checkpoints of this experiment instead of resuming.")
flags.DEFINE_string("out", None, "Grid results directory (default results/<experiments>); giving it runs even "
                    "one experiment through the grid launcher.")
flags.DEFINE_string("baseline", None, "Grid report: the run the others are compared with (default rce_only if "
                    "in the grid, else the first).")
flags.DEFINE_string("wandb_project", None, "Also log every run to this Weights & Biases project (needs "
                    "`pip install wandb`; WANDB_MODE=offline keeps the logs on disk). Runs the experiment(s) through "
                    "the grid launcher.")
flags.DEFINE_string("init_from", None, "Start from these parameters (a leverjax checkpoint folder or a "
                    "Lever-Plus .pt/.ckpt) instead of a fresh initialisation.")

for _field in config_lib.FIELDS:
    _default = getattr(config_lib.Config(), _field)
    _help = f"Config field (experiment value if not given; reference default {_default!r})."
    _define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
               str: flags.DEFINE_string}[type(_default)]
    _define(_field, None, _help)


_OWN_FLAGS = set(config_lib.FIELDS) | set(_CONTROL)


def config_overrides() -> dict:
    """The config fields given on the command line."""
    return {name: FLAGS[name].value for name in config_lib.FIELDS if FLAGS[name].present}


def parse_sweeps(values) -> dict:
    sweep = {}
    for text in values:
        if "=" not in text:
            raise ConfigError(f"--sweep={text!r} must look like field=v1,v2,...")
        name, raw = text.split("=", 1)
        name = name.strip()
        if name not in config_lib.SWEEPABLE:
            raise ConfigError(f"--sweep: {name!r} is not a sweepable field; sweepable: {', '.join(config_lib.SWEEPABLE)}")
        sweep[name] = tuple(config_lib.parse_value(name, v) for v in raw.split(",") if v.strip())
    return sweep


def load_data(cfg: config_lib.Config):
    """The dataset the config names (the built-in synthetic set when ``data`` is empty), filtered."""
    from leverjax.data import filter_queries, load_npz
    from leverjax.data.synth import load_or_make_default

    ds = load_npz(cfg.data) if cfg.data else load_or_make_default()
    ds, counts = filter_queries(ds, require_positive_query=cfg.require_positive_query,
                                min_group_size=cfg.min_group_size)
    if counts["dropped_small_group"] or counts["dropped_no_positive"]:
        print(f"filters: kept {counts['kept']} of {counts['queries_in']} queries "
              f"({counts['dropped_small_group']} with fewer than {cfg.min_group_size} trajectories, "
              f"{counts['dropped_no_positive']} without a positive)")
    return ds


def _flags_parser(argv):
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        if "Unknown command line flag" in str(e):
            print("valid flags: " + ", ".join(f"--{name}" for name in sorted(FLAGS) if name in _OWN_FLAGS),
                  file=sys.stderr)
        sys.exit(2)


def enable_compilation_cache() -> None:
    """Keeps compiled programs on disk, so a second run of the same shapes starts at once."""
    import jax

    path = os.environ.get("LEVERJAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "leverjax", "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@exit_on_error
def main(argv) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    enable_compilation_cache()
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    if FLAGS.list_experiments:
        for name, desc in experiments.describe_all():
            print(f"{name:<18} {desc}")
        return
    names = [n.strip() for n in FLAGS.experiment.split(",") if n.strip()]
    if names == ["all"]:
        names = list(experiments.NAMES)
    overrides = config_overrides()
    sweep = parse_sweeps(FLAGS.sweep)
    if len(names) != 1 or FLAGS.out or FLAGS.wandb_project:
        if FLAGS.init_from:
            raise ConfigError("--init_from applies to a single experiment, not to a grid")
        from leverjax import launch
        launch.main_grid(names, overrides, sweep, restart=FLAGS.restart, out=FLAGS.out, baseline=FLAGS.baseline,
                         wandb_project=FLAGS.wandb_project)
        return
    run_experiment(names[0], overrides, sweep, restart=FLAGS.restart, init_from=FLAGS.init_from)


def run_experiment(name: str, overrides: dict, sweep: dict, *, restart: bool = False, init_from: str | None = None):
    from leverjax.runner import Runner, expand_runs, print_summary

    exp = experiments.get(name)
    cfg = config_lib.replace(exp.config, overrides)
    sweep = {**exp.sweep, **sweep}
    runs = expand_runs(sweep, cfg.seed, cfg.seeds)  # labels omit the experiment: one per directory
    t0 = time.perf_counter()
    dataset = load_data(cfg)
    print(f"{name}: {exp.description}")
    print(f"data: {cfg.data or 'built-in synthetic set'} — {dataset.num_queries} queries, K={dataset.pool_size}, "
          f"M={dataset.max_trajectories}, S={dataset.num_steps}, d={dataset.dim}; {len(runs)} run(s) in one program")
    runner = Runner(cfg, dataset, runs, name=name, workdir=cfg.workdir, restart=restart, init_from=init_from,
                    prefix_cache=os.path.join(cfg.workdir, "prefix_cache"),
                    extra_meta={"init_from": init_from} if init_from else None)
    results = runner.run()
    print_summary(results)
    print(f"\ndone in {time.perf_counter() - t0:.1f}s; outputs in {results.directory}")
    return results


def run() -> None:
    app.run(main, flags_parser=_flags_parser)
