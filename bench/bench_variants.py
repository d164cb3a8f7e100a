"""GRPO training throughput of every selector preset (prints figures; asserts nothing).

    python bench/bench_variants.py                       # default synthetic data, default sizes
    python bench/bench_variants.py --tiny                # a seconds-long smoke run at toy sizes
    python bench/bench_variants.py --presets=v4_1,v4_9 --reps=5

For each preset: one GRPO epoch of the scheme-5 recipe with the variants' setting (no frozen backbone),
timed best-of ``--reps`` after a warm-up call (compilation excluded, reported separately), as
query-steps/s = (training queries of the epoch) / seconds, one run (no vmapped seeds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from leverjax.core import config as config_lib  # noqa: E402
from leverjax.core.model import PRESETS  # noqa: E402
from leverjax.core.train import DeviceData  # noqa: E402
from leverjax.run import registry as experiments
from leverjax.run.engine import compiled_pipeline, expand_runs, run_hyperparameters, run_keys  # noqa: E402


def bench_preset(name: str, dataset, base: config_lib.Config, reps: int) -> tuple[float, float, int]:
    """(compile + first call seconds, best epoch seconds, training queries per epoch) of one preset."""
    cfg = config_lib.replace(base, {"selector": name})
    vp = compiled_pipeline(cfg, dataset)
    pipe = vp.pipe
    data = DeviceData.from_dataset(dataset)
    runs = expand_runs({}, 0, 1)
    hp, keys = run_hyperparameters(cfg, runs), run_keys(runs)
    grpo = [i for i, p in enumerate(pipe.phases) if p.kind == "grpo"][-1]
    state = vp.begin[grpo](vp.init(data, hp, keys), data, hp)
    t = time.perf_counter()
    jax.block_until_ready(vp.epoch[grpo](state, jnp.int32(1), data, hp))
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(vp.epoch[grpo](state, jnp.int32(1), data, hp))
        best = min(best, time.perf_counter() - t)
    return first, best, len(pipe.phases[grpo].query_index)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="toy sizes (a smoke run, not a measurement)")
    args = parser.parse_args()
    overrides = {"sft_epochs": 0, "rce_epochs": 0, "grpo_epochs": 1}
    if args.tiny:
        from leverjax.data import synth

        dataset = synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6,
                                       dim=16)
        overrides.update(hidden=16, grpo_batch_size=8, eval_chunk=64, eval_shots=2)
    else:
        from leverjax.data.synth import load_or_make_default

        dataset = load_or_make_default()
    base = config_lib.replace(experiments.get("variants").config, overrides)
    print(f"{jax.devices()[0].platform} x{len(jax.devices())}; data: N={dataset.emb.shape[0]}, "
          f"Q={dataset.num_queries}, K={dataset.pool_size}, M={dataset.max_trajectories}, S={dataset.num_steps}, "
          f"d={dataset.dim}; H={base.hidden}, GRPO batch {base.grpo_batch_size}; best of {args.reps}")
    print(f"{'preset':<15} {'compile+1st s':>14} {'epoch s':>9} {'query-steps/s':>14}")
    for name in [p.strip() for p in args.presets.split(",") if p.strip()]:
        first, best, queries = bench_preset(name, dataset, base, args.reps)
        print(f"{name:<15} {first:>14.2f} {best:>9.3f} {queries / best:>14.1f}", flush=True)


if __name__ == "__main__":
    main()
