"""Where the time of a GRPO step goes, at batch 1 and 16 (prints a breakdown table; asserts nothing).

    python bench/profile_grpo.py [--batch_sizes=1,16] [--experiment=scheme5_6] [--reps=5]
        [--trace_dir=DIR]

On the default synthetic set (640 train queries, K = 64, M <= 16, S = 2, d = 512, H = 256) with the
experiment's GRPO phase (default ``scheme5_6``: frozen backbone, z-score advantages, adaptive β,
top-k curriculum), after its SFT initialisation and ``begin_phase`` (reference log-probs).

**Per step** each part is timed as a whole epoch of it, one ``lax.scan`` over the epoch's real
batches (so inputs differ at every step, nothing is hoisted, no Python dispatch between steps),
divided by the number of steps. The parts are cumulative, so each row is the difference between two
programs: (1) gather the batch from the projected table; (2) + group advantages and their statistics;
(3) + forward: the loss and its metrics (log-probs with dropout, PPO ratio, KL) against the stored
reference log-probs; (4) + backward (``value_and_grad``, the gradients applied as a plain SGD step so
that they are computed); (5) the full ``Pipeline._step``: adds the
logged gradient norm, AdamW with clipping (frozen leaves masked), the parameter update and the β
adaptation. The optimizer alone (6, fixed gradients) and the epoch set-up (rewards, table projection,
top-k sets, permutation: once per epoch, shown per step) are timed separately.

**Per epoch** the epoch as ``run.py`` runs it (``jit(vmap(train_epoch))`` over one run), the same
without ``vmap``, the steps dispatched one by one from Python (``jit(_step)`` per batch: the dispatch
cost the scan avoids), the validation after the epoch, and, once per phase, ``begin_phase`` (for
``scheme5_6``'s GRPO phase a fresh AdamW state: the reference log-probs are taken when RCE begins)
and the reference log-probs of every query (in evaluation chunks, as ``scheme5_6`` computes them once
when RCE begins). The reference policy's greedy picks on val (for ``changed_vs_ref``) are timed apart:
they are taken once whenever the reference is set (``Pipeline.reference``), not in every validation.

Every figure is the best of ``--reps`` timings after a compile-and-warm-up call. ``--trace_dir``
writes a ``jax.profiler`` trace of one runner epoch per batch size (open it in Perfetto or
TensorBoard).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from bench_train import time_calls  # noqa: E402  (bench/ is on the path when run as a script)

from leverjax.core import advantages as adv_lib  # noqa: E402
from leverjax.core import optim  # noqa: E402
from leverjax.core import train as train_lib  # noqa: E402
from leverjax.core.train import Pipeline  # noqa: E402
from leverjax.data.device import DeviceData, gather  # noqa: E402
from leverjax.data.synth import load_or_make_default  # noqa: E402
from leverjax.run import registry as experiments
from leverjax.run.engine import TRACKED_KEYS, VmappedPipeline  # noqa: E402


def best_time(fn, *args, reps: int, label: str = "") -> float:
    best = time_calls(fn, *args, reps=reps)
    if label:
        print(f"  {label}: {1e3 * best:.1f} ms", file=sys.stderr, flush=True)
    return best


def _tree_sum(tree) -> jax.Array:
    return sum(jnp.sum(x) for x in jax.tree_util.tree_leaves(tree))


def profile(cfg, ds, batch: int, reps: int, trace_dir: str | None) -> dict:
    cfg = dataclasses.replace(cfg, rce_batch_size=batch, grpo_batch_size=batch)
    pipe = Pipeline(cfg, ds)
    i = [j for j, p in enumerate(pipe.phases) if p.kind == "grpo"][-1]
    phase = pipe.phases[i]
    data = DeviceData.from_dataset(ds)
    hp = pipe.hyperparameters()
    state0 = jax.jit(pipe.init_state)(data, hp, jax.random.PRNGKey(0))
    begin = jax.jit(functools.partial(pipe.begin_phase, i))
    state = begin(state0, data, hp)
    epoch = jnp.int32(1)
    steps = phase.steps_per_epoch
    out = {"batch": batch, "steps": steps, "queries": len(phase.query_index)}

    def setup(state):
        return pipe.epoch_setup(i, state, epoch, data, hp)

    def advantages(state, ctx, b):
        rewards = ctx["grpo_rewards"][b.index]
        mask = b.traj_mask & ctx["grpo_keep"][b.index] if cfg.grpo_top_k else b.traj_mask
        adv = adv_lib.group_advantages(rewards, mask, method=cfg.advantage, min_std=hp["adv_min_std"],
                                       clip=hp["adv_clip"])
        return jnp.sum(adv) + _tree_sum(train_lib._advantage_stats(adv, rewards, mask))

    def scan_epoch(body):
        """A jitted epoch whose step is ``body(state, ctx, batch) -> scalar`` (summed into the carry)."""
        def fn(state):
            state, ctx, batches = setup(state)

            def step(acc, index):
                b = gather(data, index, ctx.get("table"))
                return acc + body(state, ctx, b, index), None
            return jax.lax.scan(step, jnp.float32(0), batches)[0]
        return jax.jit(fn)

    def gather_only(state, ctx, b, index):
        return jnp.sum(b.cand_emb[:, 0]) + jnp.sum(b.query_emb)

    def with_adv(state, ctx, b, index):
        return gather_only(state, ctx, b, index) + advantages(state, ctx, b)

    def loss_fn_of(state, ctx, index):
        b = gather(data, index, ctx.get("table"))
        return pipe._loss_fn("grpo", b, state, hp, ctx, epoch)

    def forward(state, ctx, b, index):
        loss, aux = loss_fn_of(state, ctx, index)(state["params"], state["rng"])
        return loss + _tree_sum(aux)

    def backward_epoch(state):
        """Forward + backward at every step, the gradients applied by a negligible SGD step (carried, so
        that they are used; summing them into a scalar instead crashes XLA's CPU backend here)."""
        state, ctx, batches = setup(state)

        def step(params, index):
            (loss, aux), grads = jax.value_and_grad(loss_fn_of({**state, "params": params}, ctx, index),
                                                    has_aux=True)(params, state["rng"])
            params = jax.tree_util.tree_map(lambda p, g: p - 1e-12 * g, params, grads)
            return params, loss + _tree_sum(aux)
        return jax.lax.scan(step, state["params"], batches)

    def full_epoch(state):
        state, ctx, batches = setup(state)
        step = functools.partial(pipe._step, i, hp, data, ctx, epoch)
        return jax.lax.scan(step, state, batches)

    t = {}
    t["setup"] = best_time(jax.jit(lambda s: jax.tree_util.tree_leaves(setup(s))), state, reps=reps, label="setup")
    t["gather"] = best_time(scan_epoch(gather_only), state, reps=reps, label="gather")
    t["adv"] = best_time(scan_epoch(with_adv), state, reps=reps, label="adv")
    t["forward"] = best_time(scan_epoch(forward), state, reps=reps, label="forward")
    t["backward"] = best_time(jax.jit(backward_epoch), state, reps=reps, label="backward")
    t["step"] = best_time(jax.jit(full_epoch), state, reps=reps, label="step")

    # the optimizer alone: AdamW (+ clipping, frozen mask) and the update, with fixed gradients
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-3), state["params"])

    def opt_epoch(state):
        tx = pipe.optimizer(i, hp, state["params"])

        def body(carry, _):
            params, opt_state = carry
            norm = optim.global_norm(grads, optim.trainable_mask(grads, pipe.frozen_modules("grpo")))
            updates, opt_state = tx.update(grads, opt_state, params)
            params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
            return (params, opt_state), norm
        return jax.lax.scan(body, (state["params"], state["opt_state"]), None, length=steps)
    t["optimizer"] = best_time(jax.jit(opt_epoch), state, reps=reps, label="optimizer")

    # per epoch: as the runner runs it, without vmap, steps dispatched from Python, validation, begin
    vp = VmappedPipeline(pipe)
    vstate = vp.begin[i](jax.vmap(pipe.init_state, in_axes=(None, None, 0))(data, hp, jax.random.PRNGKey(0)[None]),
                         data, jax.tree_util.tree_map(lambda x: x[None], hp))
    vhp = jax.tree_util.tree_map(lambda x: x[None], hp)
    t["epoch_runner"] = best_time(vp.epoch[i], vstate, epoch, data, vhp, reps=reps, label="epoch_runner")
    t["epoch_plain"] = best_time(jax.jit(functools.partial(pipe.train_epoch, i)), state, epoch, data, hp, reps=reps, label="epoch_plain")
    tracked = {k: vstate[k] for k in TRACKED_KEYS}
    t["validate"] = best_time(vp.validate, tracked, epoch, data, vhp, reps=reps, label="validate")
    t["begin"] = best_time(begin, state0, data, hp, reps=reps, label="begin")
    ref_logp = jax.jit(lambda p: pipe.sequence_log_probs(p, data))
    t["ref_logp"] = best_time(ref_logp, state["params"], reps=reps, label="ref_logp")

    # the reference policy's greedy picks on val: once whenever the reference is set, not in every validation
    t["val_ref_picks"] = best_time(jax.jit(lambda p: pipe.greedy_picks(p, data, "val")), state["ref_params"],
                                   reps=reps, label="val_ref_picks")

    jit_setup = jax.jit(setup)
    s1, ctx, batches = jit_setup(state)
    ctx = {k: v for k, v in ctx.items() if k != "phase_index"}
    jit_step = jax.jit(lambda st, c, idx: pipe._step(i, hp, data, {**c, "phase_index": i}, epoch, st, idx))

    def python_loop(st):
        st, c, bs = jit_setup(st)
        c = {k: v for k, v in c.items() if k != "phase_index"}
        for j in range(bs.shape[0]):
            st, _ = jit_step(st, c, bs[j])
        return st
    t["python_loop"] = best_time(python_loop, state, reps=max(1, reps // 2), label="python_loop")

    if trace_dir:
        path = os.path.join(trace_dir, f"grpo_b{batch}")
        with jax.profiler.trace(path):
            jax.block_until_ready(vp.epoch[i](vstate, epoch, data, vhp))
        out["trace"] = path
    out.update(t)
    return out


def print_breakdown(results: list[dict]) -> None:
    ms = lambda x: f"{1e3 * x:9.3f}"  # noqa: E731
    cols = "".join(f"{'b=' + str(r['batch']) + ' ms/step':>16}{'share':>7}" for r in results)
    print(f"\nGRPO step, per step (one epoch of each part in a lax.scan, / steps)\n{'part':<44}{cols}")
    rows = [
        ("gather the batch (projected table)", lambda r: r["gather"]),
        ("group advantages + their statistics", lambda r: r["adv"] - r["gather"]),
        ("forward: log-probs (dropout), PPO, KL", lambda r: r["forward"] - r["adv"]),
        ("backward (value_and_grad + SGD - forward)", lambda r: r["backward"] - r["forward"]),
        ("grad norm + AdamW + beta (- the SGD)", lambda r: r["step"] - r["backward"]),
        ("= the step (Pipeline._step in the scan)", lambda r: r["step"]),
        ("epoch set-up (rewards, table, top-k, perm)", lambda r: r["setup"]),
    ]
    for name, fn in rows:
        line = f"{name:<44}"
        for r in results:
            v = fn(r) / r["steps"]
            line += f"{ms(v):>16}{100 * fn(r) / (r['step'] + r['setup']):>6.0f}%"
        print(line)
    print(f"{'optimizer alone (fixed grads: norm+AdamW+update)':<44}"
          + "".join(f"{ms(r['optimizer'] / r['steps']):>16}{'':>7}" for r in results))
    print(f"\nper epoch{'':<35}" + "".join(f"{'b=' + str(r['batch']) + ' ms':>16}{'':>7}" for r in results))
    rows = [
        ("steps per epoch", lambda r: f"{r['steps']:>16}{'':>7}"),
        ("epoch as run.py runs it: runner.over_runs(epoch)", lambda r: f"{ms(r['epoch_runner']):>16}{'':>7}"),
        ("  the same without vmap", lambda r: f"{ms(r['epoch_plain']):>16}{'':>7}"),
        ("  set-up + steps timed apart", lambda r: f"{ms(r['setup'] + r['step']):>16}{'':>7}"),
        ("  steps dispatched one by one from Python", lambda r: f"{ms(r['python_loop']):>16}{'':>7}"),
        ("validation after the epoch", lambda r: f"{ms(r['validate']):>16}{'':>7}"),
        ("reference policy's val picks (once per reference)", lambda r: f"{ms(r['val_ref_picks']):>16}{'':>7}"),
        ("begin_phase (fresh AdamW state; once per phase)", lambda r: f"{ms(r['begin']):>16}{'':>7}"),
        ("reference log-probs, all queries (once/run)", lambda r: f"{ms(r['ref_logp']):>16}{'':>7}"),
        ("query-steps/s (runner epoch)", lambda r: f"{r['queries'] / r['epoch_runner']:>16.0f}{'':>7}"),
    ]
    for name, fn in rows:
        print(f"{name:<44}" + "".join(fn(r) for r in results))
    print("\nDispatch per step saved by the scan = (Python loop - scan epoch) / steps: "
          + ", ".join(f"b={r['batch']}: {1e3 * (r['python_loop'] - r['epoch_plain']) / r['steps']:.3f} ms"
                      for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_sizes", default="1,16")
    parser.add_argument("--experiment", default="scheme5_6")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--trace_dir", default="")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} on "
          f"{jax.devices()[0].platform}; experiment {args.experiment}", flush=True)
    ds = load_or_make_default()
    cfg = experiments.get(args.experiment).config
    results = []
    for b in (int(x) for x in args.batch_sizes.split(",")):
        t = time.perf_counter()
        results.append(profile(cfg, ds, b, args.reps, args.trace_dir or None))
        print(f"batch {b}: profiled in {time.perf_counter() - t:.0f}s", flush=True)
    print_breakdown(results)


if __name__ == "__main__":
    main()
