"""Scoring throughput of the selector: trajectories/s of jitted ``Selector.log_probs`` in eval mode.

Two layouts of the same work (B queries × M trajectories of S steps over a K-candidate pool):

* ``encode-once`` (leverjax): steps 1-5 of the network run once per query, all M trajectories are
  scored from that encoding: inputs ``[B, d]``, ``[B, K, d]``, trajectories ``[B, M, S]``;
* ``repeat-pool`` (the reference's layout): the query and its pool are repeated M times and every
  trajectory is encoded on its own: inputs ``[B·M, d]``, ``[B·M, K, d]``, trajectories ``[B·M, 1, S]``.

Both give the same log-probs (checked below). Usage::

    python bench/bench_scoring.py [--pool 64 --traj 16 --steps 2 --dim 512 --hidden 256 --batch 64]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from leverjax.core.model import Selector, SelectorConfig, init_params  # noqa: E402


def _time(fn, args, min_seconds):
    """Calls per second of ``fn(*args)`` (compiled and warmed up first), over at least ``min_seconds``."""
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    calls, start = 0, time.perf_counter()
    while True:
        jax.block_until_ready(fn(*args))
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and calls >= 5:
            return calls / elapsed, calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=64, help="K candidates per query")
    ap.add_argument("--traj", type=int, default=16, help="M trajectories per query")
    ap.add_argument("--steps", type=int, default=2, help="S picks per trajectory")
    ap.add_argument("--dim", type=int, default=512, help="embedding width d")
    ap.add_argument("--hidden", type=int, default=256, help="H")
    ap.add_argument("--batch", type=int, default=64, help="B queries per call")
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per layout")
    a = ap.parse_args(argv)
    K, M, S, d, H, B = a.pool, a.traj, a.steps, a.dim, a.hidden, a.batch

    config = SelectorConfig(hidden=H)
    sel = Selector(config)
    params = jax.jit(lambda k: init_params(config, k, d))(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    normalise = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    q = jnp.asarray(normalise(rng.normal(size=(B, d))), jnp.float32)
    C = jnp.asarray(normalise(rng.normal(size=(B, K, d))), jnp.float32)
    mask = jnp.ones((B, K), bool)
    traj = jnp.asarray(np.stack([[rng.choice(K, S, replace=False) for _ in range(M)] for _ in range(B)]), jnp.int32)

    log_probs = jax.jit(lambda p, q, c, m, t: sel.log_probs(p, q, c, m, t))  # eval mode (deterministic)
    once_args = (params, q, C, mask, traj)
    rep_args = (params, jnp.repeat(q, M, 0), jnp.repeat(C, M, 0), jnp.repeat(mask, M, 0), traj.reshape(B * M, 1, S))

    a_once = np.asarray(log_probs(*once_args))
    a_rep = np.asarray(log_probs(*rep_args)).reshape(B, M)
    np.testing.assert_allclose(a_once, a_rep, rtol=1e-5, atol=1e-5)

    print(f"machine: {platform.machine()} {platform.processor() or ''} os.cpu_count()={os.cpu_count()} "
          f"jax {jax.__version__} backend={jax.default_backend()} devices={jax.devices()}")
    if hasattr(os, "getloadavg"):
        print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"shape: B={B} queries/call, M={M}, S={S}, K={K}, d={d}, H={H} -> {B * M} trajectories/call")
    results = {}
    for name, args in (("encode-once", once_args), ("repeat-pool", rep_args)):
        rate, calls = _time(log_probs, args, a.seconds)
        results[name] = rate
        print(f"{name:12s}: {rate * B * M:12,.0f} trajectories/s  {rate * B:10,.0f} queries/s  "
              f"({1e3 / rate:.2f} ms/call, {calls} calls)")
    print(f"speed-up of encode-once over repeat-pool: {results['encode-once'] / results['repeat-pool']:.1f}x")


if __name__ == "__main__":
    main()
