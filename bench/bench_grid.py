"""Benchmarks of the batch launcher on the default synthetic data set.

    python bench/bench_grid.py --mode=vmap                  # 16 vmapped runs in one program vs 1 run
    python bench/bench_grid.py --mode=grid                  # the whole registry × 5 seeds, as run.py runs it
    python bench/bench_grid.py --mode=grid --max_epochs=2   # phases cut to ~2 epochs, then extrapolated

``grid`` runs ``launch.run_grid(experiments.NAMES, seeds=5)`` into a fresh directory with a fresh
compilation cache (so compile times are real; ``--cache=DIR`` reuses one for a warm start), records per group the compile time (tracing + XLA
compilation, measured by ``jax.monitoring``), the steady time per epoch of each phase (epochs after the
first of each phase), and the rest (first-epoch extra, checkpoint writes, final evaluation). With
``--max_epochs`` (see :func:`truncation`) it also extrapolates the full grid: compile + full epochs × steady time + the rest
scaled by the epoch count. ``vmap`` times steady epochs of each phase of one group with 1 and with 16 runs.
Results are printed and written as JSON (``--json``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from leverjax.fileio import dumps_strict  # noqa: E402


def _fresh_cache(path: str | None = None) -> str:
    """Compiled programs go to ``path`` (a cache an earlier run left: a warm start), else to a new empty
    folder (cold: compile times are real)."""
    import jax

    path = path or tempfile.mkdtemp(prefix="leverjax-bench-xla-")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def truncation(counts: set[int], cap: int) -> dict[int, int]:
    """Epoch counts cut to ``cap``; counts above it become cap+1, cap+2, ... in order, so experiments
    with different counts keep different static signatures (the grid's groups stay the same)."""
    above = sorted(c for c in counts if c > cap)
    return {c: c if c <= cap else cap + 1 + above.index(c) for c in counts}


def bench_grid(seeds: int, max_epochs: int | None, out: str | None, names: list[str] | None = None,
               cache: str | None = None, workers: int | None = None) -> dict:
    import jax

    from leverjax.run import console, launch
    from leverjax.run import registry as experiments

    cache = _fresh_cache(cache)
    epochs: list[dict] = []
    original = console.Progress.epoch

    def record(self, group_id, info):  # every epoch's time, tagged with its group
        epochs.append({"group": group_id, **info})
        original(self, group_id, info)

    console.Progress.epoch = record
    per_experiment = {}
    if max_epochs:
        fields = ("sft_epochs", "rce_epochs", "grpo_epochs", "grpo_positive_only_epochs")
        configs = {name: experiments.get(name).config for name in experiments.NAMES}
        for field in fields:
            cut = truncation({getattr(c, field) for c in configs.values()}, max_epochs)
            for name, cfg in configs.items():
                per_experiment.setdefault(name, {})[field] = cut[getattr(cfg, field)]
    out = out or tempfile.mkdtemp(prefix="leverjax-bench-grid-")
    t0 = time.perf_counter()
    names = names or list(experiments.NAMES)
    per_experiment = {k: v for k, v in per_experiment.items() if k in names}
    result = launch.run_grid(names, {}, {}, seeds=seeds, out=out, tables=False, workers=workers,
                             experiment_overrides=per_experiment, printer=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    console.Progress.epoch = original

    groups = []
    for g, log in zip(result.grid.groups, result.groups):
        mine = [e for e in epochs if e["group"] == g.id]
        steady: dict[str, float] = {}
        for phase in dict.fromkeys(e["phase"] for e in mine):
            later = [e["seconds"] for e in mine if e["phase"] == phase and e["epoch"] > 1]
            first = [e["seconds"] for e in mine if e["phase"] == phase and e["epoch"] == 1]
            steady[phase] = statistics.median(later) if later else first[0]
        trained = sum(e["seconds"] for e in mine)
        rest = log["seconds"] - log["compile_seconds"] - sum(steady[e["phase"]] for e in mine)
        cfg = experiments.get(g.experiments[0]).config  # full epoch counts of the registry
        full = {"sft": cfg.sft_epochs, "rce": cfg.rce_epochs, "grpo_positive": cfg.grpo_positive_only_epochs,
                "grpo": cfg.grpo_epochs}
        full_epochs = sum(full[p] for p in steady)
        estimate = (log["compile_seconds"] + sum(full[p] * steady[p] for p in steady)
                    + max(rest, 0.0) * full_epochs / max(len(mine), 1))
        groups.append({"id": g.id, "experiments": g.experiments, "runs": log["runs"], "wall_s": log["seconds"],
                       "compile_s": log["compile_seconds"], "epochs_s": trained, "steady_epoch_s": steady,
                       "rest_s": rest, "epochs_run": len(mine), "epochs_full": full_epochs,
                       "full_estimate_s": estimate})
    # Groups trained side by side (--workers) overlap: the full grid's wall is estimated as the sum of
    # its groups' estimates shrunk by the overlap this run measured (the sum of its groups' walls / its wall).
    overlap = sum(g["wall_s"] for g in groups) / wall if groups else 1.0
    report = {"mode": "grid", "seeds": seeds, "max_epochs": max_epochs, "runs": len(result.grid.runs),
              "groups": groups, "wall_s": wall, "devices": [str(d) for d in jax.devices()], "overlap": overlap,
              "full_estimate_s": sum(g["full_estimate_s"] for g in groups) / overlap if max_epochs else wall,
              "failed": [s["run"] for s in result.failed], "out": out, "cache": cache}
    print(f"\n{'group':<5} {'runs':>4} {'compile':>8} {'wall':>8} {'full est.':>9}  steady s/epoch   experiments")
    for g in groups:
        steady = " ".join(f"{p}={s:.2f}" for p, s in g["steady_epoch_s"].items())
        print(f"{g['id']:<5} {g['runs']:>4} {g['compile_s']:>7.1f}s {g['wall_s']:>7.1f}s {g['full_estimate_s']:>8.0f}s"
              f"  {steady:<30} {', '.join(g['experiments'])}")
    print(f"\nmeasured wall {wall:.0f}s for {report['runs']} runs"
          + (f"; phases cut to about {max_epochs} epochs; full grid estimated at {report['full_estimate_s']:.0f}s"
             if max_epochs else ""))
    print(f"compile total {sum(g['compile_s'] for g in groups):.0f}s over {len(groups)} groups; groups' walls add up to "
          f"{overlap:.2f}x the wall (groups trained side by side)")
    return report


def bench_vmap(name: str, runs: list[int], epochs: int) -> dict:
    import jax
    import jax.numpy as jnp

    from leverjax.core import config as config_lib
    from leverjax.data.synth import load_or_make_default
    from leverjax.run import registry as experiments
    from leverjax.run.console import CompileTimer
    from leverjax.run.engine import TRACKED_KEYS, Runner, expand_runs

    _fresh_cache()
    ds = load_or_make_default()
    cfg = config_lib.replace(experiments.get(name).config,
                             {"sft_epochs": epochs, "rce_epochs": epochs, "grpo_epochs": epochs})
    out = {"mode": "vmap", "experiment": name, "devices": [str(d) for d in jax.devices()], "results": {}}
    for r in runs:
        runner = Runner(cfg, ds, expand_runs({}, 0, r), out=lambda s: None)
        vp, data, hp = runner.vp, runner.data, runner.hp
        with CompileTimer() as timer:
            state = vp.init(data, hp, runner.keys)
            phases = {}
            for i, phase in enumerate(runner.pipe.phases):
                state = vp.begin[i](state, data, hp)
                times = []
                for e in range(phase.epochs):
                    t0 = time.perf_counter()
                    new, _ = vp.epoch[i](state, jnp.int32(e), data, hp)
                    tracked, val = vp.validate({k: new[k] for k in TRACKED_KEYS},
                                               jnp.int32(e), data, hp)
                    state = {**new, **tracked}
                    jax.block_until_ready(val)
                    times.append(time.perf_counter() - t0)
                phases[phase.name] = statistics.median(times[1:]) if len(times) > 1 else times[0]
        out["results"][r] = {"steady_epoch_s": phases, "compile_s": timer.seconds}
        print(f"{r:>3} run(s): compile {timer.seconds:5.1f}s; steady s/epoch "
              + " ".join(f"{p}={s:.3f}" for p, s in phases.items()), flush=True)
    if len(runs) >= 2:
        lo, hi = runs[0], runs[-1]
        for p in out["results"][lo]["steady_epoch_s"]:
            a, b = out["results"][lo]["steady_epoch_s"][p], out["results"][hi]["steady_epoch_s"][p]
            print(f"{p:<6} {hi} runs cost {b / a:5.2f}× the time of {lo} (per run {b / a * lo / hi:5.2f}×)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("grid", "vmap"), default="vmap")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--max_epochs", type=int, default=None, help="grid: cut every phase to this many epochs")
    parser.add_argument("--out", default=None, help="grid: results directory (default: a temporary one)")
    parser.add_argument("--experiments", default=None, help="grid: a comma-separated subset of the registry, or "
                        "'schemes' (epoch cuts are still computed over the whole registry)")
    parser.add_argument("--experiment", default="current", help="vmap: the group's experiment")
    parser.add_argument("--runs", default="1,16", help="vmap: run counts to compare")
    parser.add_argument("--epochs", type=int, default=3, help="vmap: epochs per phase (the first is not timed)")
    parser.add_argument("--workers", type=int, default=None, help="grid: groups trained at once (run.py --workers; "
                        "default: run.py's)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--cache", default=None, help="grid: the compilation cache to use (e.g. the 'cache' an "
                        "earlier run printed in its JSON: a warm start); default: a new empty one")
    args = parser.parse_args()
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    if args.mode == "grid":
        from leverjax.run import registry as experiments

        names = args.experiments and list(experiments.COLLECTIONS.get(args.experiments, args.experiments.split(",")))
        result = bench_grid(args.seeds, args.max_epochs, args.out, names, args.cache, args.workers)
    else:
        result = bench_vmap(args.experiment, [int(r) for r in args.runs.split(",")], args.epochs)
    if args.json:
        with open(args.json, "w") as f:
            f.write(dumps_strict(result, indent=1))


if __name__ == "__main__":
    main()
