"""Cost of per-trajectory dropout masks (``--dropout_per_trajectory``) against the default shared mask.

Times one RCE and one GRPO training epoch (compiled once, then the best of ``--repeats`` runs) with
each setting on the default synthetic data (or a smaller one with ``--queries``) and prints the ratio.

    python bench/bench_dropout.py [--queries=800 --batch=16 --repeats=3]
"""
from __future__ import annotations

import argparse
import functools
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


import jax  # noqa: E402

from leverjax.core import config as config_lib  # noqa: E402
from leverjax.core.train import DeviceData, Pipeline  # noqa: E402
from leverjax.data import synth  # noqa: E402
from leverjax.run import registry as experiments


def epoch_seconds(cfg, ds, repeats: int) -> dict:
    pipe, data = Pipeline(cfg, ds), DeviceData.from_dataset(ds)
    hp = pipe.hyperparameters()
    state = jax.jit(pipe.init_state)(data, hp, jax.random.PRNGKey(0))
    out = {}
    for i, phase in enumerate(pipe.phases):
        state = jax.jit(functools.partial(pipe.begin_phase, i))(state, data, hp)
        epoch = jax.jit(functools.partial(pipe.train_epoch, i))
        jax.block_until_ready(epoch(state, 0, data, hp))  # compile
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(epoch(state, 0, data, hp))
            best = min(best, time.perf_counter() - t0)
        out[phase.name] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=0, help="queries of a smaller synthetic set (0: the default set)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ds = (synth.make_synthetic(num_queries=args.queries, num_test_queries=0) if args.queries
          else synth.load_or_make_default())
    base = config_lib.replace(experiments.get("scheme5_6").config, dict(
        sft_epochs=0, rce_epochs=1, grpo_epochs=1, rce_batch_size=args.batch, grpo_batch_size=args.batch))
    shared = epoch_seconds(base, ds, args.repeats)
    own = epoch_seconds(config_lib.replace(base, {"dropout_per_trajectory": True}), ds, args.repeats)
    n = len(Pipeline(base, ds).split_index["train"])
    print(f"{n} training queries, M = {ds.max_trajectories}, K = {ds.pool_size}, d = {ds.dim}, batch {args.batch}, "
          f"{jax.devices()[0].platform}")
    for phase in shared:
        print(f"{phase:>5} epoch: shared mask {shared[phase]:.3f} s, per-trajectory masks {own[phase]:.3f} s "
              f"({own[phase] / shared[phase]:.1f}x)")


if __name__ == "__main__":
    main()
