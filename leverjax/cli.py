"""``run.py``'s command line: the main flags, then one flag per config field, derived from its declaration.

Every field of :class:`leverjax.core.config.Config` is a flag of the same name whose help, default and choices
come from the field (enum fields are enum flags). ``--help`` prints the main flags first, then the config
fields grouped by section, and exits 0.
"""
from __future__ import annotations

import os
import sys
import textwrap
from typing import Any, Mapping, Sequence

import jax
from absl import app, flags, logging

from leverjax.core import config as config_lib
from leverjax.errors import ConfigError, LeverjaxError, exit_on_error
from leverjax.report.markdown import write_report
from leverjax.report.rounds import write_rounds_report
from leverjax.run import distributed, launch, rounds
from leverjax.run import registry as experiments
from leverjax.run.grid import default_out
from leverjax.run.results import GridResult
from leverjax.tools import interop

FLAGS = flags.FLAGS

# The main flags besides the config fields: name -> (flag type, default, help), in the order --help shows them.
_MAIN = {
    "experiment": (flags.DEFINE_string, "scheme5_6", "Named experiment(s) to train: one name, a comma-separated "
                   "list (a grid), 'all' (the whole registry) or 'schemes' (the registry without the selector "
                   "variants' runs); see --list_experiments. [default 'scheme5_6']"),
    "sweep": (flags.DEFINE_multi_string, [], "field=v1,v2,...: train every value of any config field; repeat the "
              "flag for a grid of values. Values of a sweepable field are vmapped in one compiled program; each "
              "value of a static field (selector, num_layers, ...) gets a program of its own, in the same results "
              "directory."),
    "out": (flags.DEFINE_string, None, "Results directory [default <workdir>/<experiment> for one experiment, "
            "results/<experiments> for several]"),
    "init_from": (flags.DEFINE_string, None, "Start every run from these parameters (a leverjax parameter folder "
                  "or a Lever-Plus .pt/.ckpt) instead of a fresh initialisation."),
    "baseline": (flags.DEFINE_string, None, "The run the report compares the others with [default rce_only if in "
                 "the grid, else the first]"),
    "restart": (flags.DEFINE_bool, False, "Start over: discard the results directory's runs and recompute cached "
                "SFT/RCE prefixes instead of resuming. [default false]"),
    "workers": (flags.DEFINE_integer, None, "Train up to this many groups of a grid at once, each in a process of "
                "its own (every group computes what it computes alone; a group that reuses another's SFT/RCE "
                "prefix waits for it). [default: 2 on a CPU of 2 or more cores when the grid has several groups, "
                "else 1]"),
    "list_experiments": (flags.DEFINE_bool, False, "List the registered experiments and exit."),
    "wandb_project": (flags.DEFINE_string, None, "Also log every run to this Weights & Biases project (needs "
                      "`pip install wandb`; WANDB_MODE=offline keeps the logs on disk)."),
    "distributed": (flags.DEFINE_bool, False, "Run as one of several cooperating processes (jax.distributed): the "
                    "cluster (SLURM, Open MPI, ...) is detected from the environment unless --coordinator_address, "
                    "--num_processes and --process_id are given (which imply --distributed). Start every process "
                    "with the same command."),
    "coordinator_address": (flags.DEFINE_string, None, "HOST:PORT where process 0 listens and the others connect."),
    "num_processes": (flags.DEFINE_integer, None, "Number of processes of a multi-process run."),
    "process_id": (flags.DEFINE_integer, None, "This process's index, 0..num_processes-1 (0 writes the results)."),
    "distributed_timeout": (flags.DEFINE_float, 300.0, "Seconds to wait for every process to connect, and at most "
                            "for another process at any later synchronisation point. [default 300]"),
    "heartbeat_timeout": (flags.DEFINE_float, 60.0, "Seconds without a sign of life after which a process counts "
                          "as lost; the others then stop with a message naming it. [default 60]"),
}
for _name, (_define, _default, _help) in _MAIN.items():
    _define(_name, _default, _help)
# The flags --help shows first: the main ones, with the config fields seeds and data among them.
MAIN_FLAGS = ("experiment", "seeds", "sweep", "data", *list(_MAIN)[2:])

for _name, _field in config_lib.FIELDS.items():
    _meta = _field.metadata
    _help = config_lib.describe(_name)
    if _meta["choices"]:
        flags.DEFINE_enum(_name, None, list(_meta["choices"]), _help)
    else:
        {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
         str: flags.DEFINE_string}[type(_field.default)](_name, None, _help)

_OWN_FLAGS = set(config_lib.FIELDS) | set(MAIN_FLAGS)


def config_overrides() -> dict:
    """The config fields given on the command line."""
    return {name: FLAGS[name].value for name in config_lib.FIELDS if FLAGS[name].present}


def parse_sweeps(values) -> dict:
    """``["field=v1,v2", ...]`` as ``{field: (v1, v2)}`` with values parsed as the field's type."""
    sweep = {}
    for text in values:
        if "=" not in text:
            raise ConfigError(f"--sweep={text!r} must look like field=v1,v2,...")
        name, raw = (part.strip() for part in text.split("=", 1))
        sweep[name] = tuple(config_lib.parse_value(name, v.strip()) for v in raw.split(",") if v.strip())
        if not sweep[name]:
            raise ConfigError(f"--sweep={text!r} gives no value")
    return sweep


def help_text() -> str:
    """``--help``: usage, the main flags, then every config field by section with its help, default, choices."""
    width = 100

    def entry(name: str, text: str) -> str:
        body = textwrap.fill(text, width, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
        return f"  --{name}\n{body}"

    lines = ["Train named leverjax experiments (SFT -> RCE -> GRPO) and report them.", "",
             "usage: python run.py --experiment=NAME[,NAME...] [--seeds=N] [--sweep=field=v1,v2] [--field=value ...]",
             "", "main flags:"]
    for name in MAIN_FLAGS:
        lines.append(entry(name, config_lib.describe(name) if name in config_lib.FIELDS else _MAIN[name][2]))
    for section in config_lib.SECTIONS:
        fields = [n for n in config_lib.names(section=section) if n not in MAIN_FLAGS]
        if fields:
            lines += ["", f"{section} (config fields; an experiment's own value replaces the default):"]
            lines += [entry(name, config_lib.describe(name)) for name in fields]
    return "\n".join(lines)


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _flags_parser(argv):
    if any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?") for a in argv[1:]):
        print(help_text())
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.IllegalFlagValueError as e:
        name = next((n for n in _OWN_FLAGS if str(e).startswith(f"flag --{n}=")), None)
        given = str(e).split(":")[0].removeprefix("flag ")
        if name is not None and isinstance(FLAGS[name], flags.BooleanFlag):
            _error(f"{given} is not a boolean; use true or false")
        if name in config_lib.FIELDS and config_lib.meta(name)["choices"]:
            _error(f"--{name}={given.split('=', 1)[1]!r} is not one of: {', '.join(config_lib.meta(name)['choices'])}")
        _error(str(e))
    except flags.Error as e:
        message = str(e)
        if "Unknown command line flag" in message:
            message += "; valid flags: " + ", ".join(f"--{n}" for n in sorted(_OWN_FLAGS)) + " (see --help)"
        _error(message)


def enable_compilation_cache() -> None:
    """Keeps compiled programs on disk, so a second run of the same shapes starts at once."""
    path = os.environ.get("LEVERJAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "leverjax", "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def start_distributed() -> None:
    """Joins the other processes when the command line asks for it (before anything touches a device)."""
    explicit = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if FLAGS.distributed or any(v is not None for v in explicit):
        distributed.initialize(*explicit, timeout=FLAGS.distributed_timeout,
                               heartbeat_timeout=FLAGS.heartbeat_timeout)
        print(f"{distributed.describe()} connected ({jax.device_count()} devices in all); "
              + ("this process writes the results" if distributed.is_primary() else "process 0 prints the progress"),
              flush=True)


@exit_on_error
def main(argv) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; what finished is on disk
        print("\ninterrupted: finished runs and the last checkpoints are kept; the same command resumes",
              file=sys.stderr, flush=True)
        sys.exit(130)
    except LeverjaxError as e:
        if distributed.is_multiprocess():  # exit at once: JAX's exit handlers would wait for the other processes
            distributed.abort(str(e))
        raise
    distributed.finish()


def _main(argv) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    enable_compilation_cache()
    start_distributed()
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    if FLAGS.list_experiments:
        for name, desc in experiments.describe_all():
            print(f"{name:<18} {desc}")
        for name, members in experiments.COLLECTIONS.items():
            print(f"{name:<18} (collection) {members[0]} ... {members[-1]}: {len(members)} experiments")
        return
    names = [n.strip() for n in FLAGS.experiment.split(",") if n.strip()]
    if len(names) == 1 and names[0] in experiments.COLLECTIONS:
        names = list(experiments.COLLECTIONS[names[0]])
    train(names, config_overrides(), parse_sweeps(FLAGS.sweep), restart=FLAGS.restart, out=FLAGS.out,
          baseline=FLAGS.baseline, init_from=FLAGS.init_from, wandb_project=FLAGS.wandb_project,
          workers=FLAGS.workers)


def train(names: Sequence[str], overrides: Mapping[str, Any], sweep: Mapping[str, Sequence[Any]], *,
         restart: bool = False, out: str | None = None, baseline: str | None = None,
         init_from: str | None = None, wandb_project: str | None = None,
         workers: int | None = None) -> GridResult | None:
    """``run.py``: one experiment or a grid, with the command line's values. A single experiment writes to
    ``<workdir>/<experiment>`` (default ``checkpoints/<experiment>``), a grid to ``--out`` (default
    ``results/<experiments>``); both through :func:`leverjax.run.launch.run_grid`, so both hold the same files."""
    names = list(dict.fromkeys(names))
    if len(names) == 1 and out is None:
        workdir = overrides.get("workdir") or experiments.get(names[0]).config.workdir
        out = os.path.join(workdir, names[0])
    if rounds.rounds_of(names, overrides, sweep) > 1:  # the data loop: a grid per round (leverjax.run.rounds)
        out = out or default_out(names, overrides, sweep)
        rounds.run_rounds(names, overrides, sweep, out=out, restart=restart, baseline=baseline, init_from=init_from,
                          load_init=interop.load_selector_params, report=write_report, wandb_project=wandb_project,
                          workers=workers)
        print(f"rounds: report in {write_rounds_report(out)}", flush=True)
        return None
    result = launch.run_grid(names, overrides, sweep, out=out, restart=restart, baseline=baseline, init_from=init_from,
                             load_init=interop.load_selector_params, report=write_report,
                             wandb_project=wandb_project, workers=workers)
    if result.failed and len(result.failed) == len(result.grid.runs):
        raise LeverjaxError(f"every run failed; the first: {result.failed[0]['run']}: "
                            f"{result.failed[0].get('reason', '')}")
    return result


def run() -> None:
    app.run(main, flags_parser=_flags_parser)
