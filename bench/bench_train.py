"""Training benchmarks on the default synthetic data set (prints figures; asserts nothing).

    python bench/bench_train.py [--skip_main_job]

1. Wall time of ``python run.py --experiment=scheme5_6`` with an empty compilation cache (compile
   included) and again with the cache warm.
2. GRPO training throughput (query-steps/s) at the default sizes (K=64, M=16, S=2, d=512, H=256,
   16 queries per step) against the bound set by this machine's matrix-multiply rate, measured in
   the same run. FLOPs per query-step are counted from the network's matrix products (see
   :func:`grpo_flops_per_query_step`): the forward pass plus twice the forward FLOPs of the part
   that is trained (the usual backward ≈ 2× forward), plus the epoch's one projection of the table.
3. The cost of 8 vmapped seeds relative to 1 seed, per GRPO epoch.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from leverjax.data.device import DeviceData  # noqa: E402
from leverjax.data.synth import load_or_make_default  # noqa: E402
from leverjax.run import registry as experiments
from leverjax.run.engine import compiled_pipeline, expand_runs, run_hyperparameters, run_keys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def matmul_rate(n: int = 1024, reps: int = 20) -> float:
    """Sustained float32 matrix-multiply FLOP/s of this machine (jitted jnp.dot, n×n)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            out = f(a)
        out.block_until_ready()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n ** 3 / best


def grpo_flops_per_query_step(cfg, d: int, k: int, m: int, s: int, n: int, queries: int) -> tuple[float, str]:
    """Matrix-product FLOPs of one GRPO query-step (multiply-add = 2 FLOPs) and how they are counted.

    Forward per query: input_proj (K+1)·d·H (skipped when the backbone is frozen: the table is
    projected once per epoch, N·d·H, amortised over the epoch's queries), per attention layer (one query
    token, whose keys are never projected: :class:`leverjax.core.model.MultiheadAttention`) the q projection,
    W_kᵀq, W_v after the weighted sum and out_proj 4H², scores and weighted sum 2·heads·K·H; query_proj H²,
    cand_proj K·H², scoring S·M·K·H, gate (S−1) updates of M rows, 2H² each, except that the first update's
    state half (the query, the same for every trajectory) is computed once: H² + M·H² + (S−2)·M·2H². Training
    adds 2× the forward FLOPs of the trained
    part (with a frozen backbone: everything but input_proj and cand_proj).
    """
    h, layers = cfg.hidden, cfg.num_layers
    frozen = cfg.freeze_backbone
    input_proj = 0.0 if frozen else (k + 1) * d * h
    attention = layers * (4 * h * h + 2 * cfg.num_heads * k * h)
    heads = h * h + k * h * h
    gate = (h * h + m * h * h + (s - 2) * m * 2 * h * h) if s >= 2 else 0
    scoring = s * m * k * h + gate
    forward = 2 * (input_proj + attention + heads + scoring)
    trained = forward - (2 * k * h * h if frozen else 0.0)
    table = 2 * n * d * h / queries if frozen else 0.0
    total = forward + 2 * trained + table
    how = (f"forward {forward / 1e6:.1f} + backward 2 x {trained / 1e6:.1f} (trained part)"
           + (f" + table projection {table / 1e6:.1f} (frozen backbone)" if frozen else "") + " MFLOP")
    return total, how


def time_calls(fn, *args, reps: int = 5) -> float:
    """Best-of wall time of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def grpo_epoch_bench(num_runs: int, dataset, cfg):
    vp = compiled_pipeline(cfg, dataset)
    pipe = vp.pipe
    data = DeviceData.from_dataset(dataset)
    runs = expand_runs({}, 0, num_runs)
    hp, keys = run_hyperparameters(cfg, runs), run_keys(runs)
    grpo = [i for i, p in enumerate(pipe.phases) if p.kind == "grpo"][-1]
    state = vp.begin[grpo](vp.init(data, hp, keys), data, hp)
    fn = vp.epoch[grpo]
    seconds = time_calls(fn, state, jnp.int32(1), data, hp)
    phase = pipe.phases[grpo]
    q, k = dataset.pool_ids.shape
    flops, how = grpo_flops_per_query_step(cfg, dataset.emb.shape[1], k, dataset.traj.shape[1],
                                           dataset.traj.shape[2], dataset.emb.shape[0], len(phase.query_index))
    return seconds, flops, how, len(phase.query_index) * num_runs, phase


def main_job_wall_time(cache_dir: str) -> float:
    env = {**os.environ, "LEVERJAX_CACHE_DIR": cache_dir}
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        subprocess.run([sys.executable, "run.py", "--experiment=scheme5_6", f"--workdir={work}"], cwd=ROOT,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip_main_job", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; load average {os.getloadavg()[0]:.1f}")
    dataset = load_or_make_default()
    cfg = experiments.get("scheme5_6").config

    if not args.skip_main_job:
        with tempfile.TemporaryDirectory() as cache:
            cold = main_job_wall_time(cache)
            warm = main_job_wall_time(cache)
        print(f"run.py --experiment=scheme5_6: {cold:.1f} s with an empty compilation cache, "
              f"{warm:.1f} s with a warm one")

    rate = matmul_rate()
    seconds, per_step, how, query_steps, phase = grpo_epoch_bench(1, dataset, cfg)
    achieved = query_steps / seconds
    bound = rate / per_step
    print(f"matmul rate: {rate / 1e9:.1f} GFLOP/s (float32, 1024x1024)")
    print(f"GRPO epoch: {len(phase.query_index)} queries in {phase.steps_per_epoch} steps of "
          f"{phase.batch_size}: {seconds * 1e3:.0f} ms -> {achieved:.0f} query-steps/s")
    print(f"FLOPs per query-step: {per_step / 1e6:.1f} MFLOP = {how}")
    print(f"bound at the matmul rate: {bound:.0f} query-steps/s; achieved {100 * achieved / bound:.0f}% of it")

    s8 = grpo_epoch_bench(8, dataset, cfg)[0]
    print(f"8 seeds vmapped: {s8 * 1e3:.0f} ms per GRPO epoch vs {seconds * 1e3:.0f} ms for 1 seed "
          f"= {s8 / seconds:.2f}x the time for 8x the work")


if __name__ == "__main__":
    main()
