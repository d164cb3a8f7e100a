"""AdamW + clipping + schedules with traced hyperparameters (leverjax.core.optim, docs/reference.md §4 "Optimizer")."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from leverjax.core.optim import BACKBONE, global_norm, learning_rate_at, make_optimizer, trainable_mask, unit_schedule
from leverjax.errors import ConfigError


def test_warmup_cosine_values():
    total, ratio = 100, 0.1  # 10 warmup steps
    fn = jax.jit(unit_schedule("warmup_cosine", total, ratio))
    got = np.array([float(fn(t)) for t in range(total + 1)] + [float(fn(150))])
    want = [t / 10 if t < 10 else 0.5 * (1.0 + math.cos(math.pi * (t - 10) / 90)) for t in range(total + 1)]
    np.testing.assert_allclose(got[:-1], want, rtol=1e-5, atol=1e-6)
    assert got[0] == 0.0 and got[5] == pytest.approx(0.5)  # linear warmup from 0
    assert got[10] == pytest.approx(1.0) and got.max() == pytest.approx(1.0)  # the peak
    assert got[55] == pytest.approx(0.5, abs=1e-6)  # half way down the cosine
    assert abs(got[100]) < 1e-7 and abs(got[-1]) < 1e-7  # ends at 0 and stays there
    # the SFT default: 5% warmup of 20 steps is one step, then straight to the peak
    fn20 = unit_schedule("warmup_cosine", 20)
    assert float(fn20(0)) == 0.0 and float(fn20(1)) == pytest.approx(1.0)
    np.testing.assert_allclose(learning_rate_at(3e-4, 55, total_steps=total, schedule="warmup_cosine",
                                                warmup_ratio=ratio), 1.5e-4, rtol=1e-5)


def test_constant_schedule():
    fn = unit_schedule("constant", 10)
    assert all(float(fn(t)) == 1.0 for t in (0, 1, 9, 10, 1000))
    assert float(learning_rate_at(5e-6, 123, total_steps=10)) == pytest.approx(5e-6)


def test_optimizer_applies_the_schedule_step_by_step():
    """With a constant gradient, Adam's bias-corrected step is ±lr_t: the updates trace the schedule."""
    total = 40
    params = {"w": jnp.zeros(3)}
    grads = {"w": jnp.array([0.1, -0.2, 0.3])}

    @jax.jit
    def run(lr):
        tx = make_optimizer(lr, 0.0, total_steps=total, schedule="warmup_cosine", warmup_ratio=0.1)

        def body(state, _):
            updates, state = tx.update(grads, state, params)
            return state, updates["w"]

        return jax.lax.scan(body, tx.init(params), None, length=total)[1]

    steps = np.asarray(run(2e-3))
    sched = unit_schedule("warmup_cosine", total, 0.1)
    want = np.array([2e-3 * float(sched(t)) for t in range(total)])
    np.testing.assert_allclose(-steps[:, 0], want, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(steps[:, 1], want, rtol=1e-4, atol=1e-12)
    assert steps[0, 0] == 0.0  # the first step runs at the warmup's lr 0, like torch's scheduler


def test_matches_torch_adamw_with_clipping():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3)).astype(np.float32)
    grads = [rng.normal(scale=s, size=(4, 3)).astype(np.float32) for s in (0.1, 2.0, 0.05, 3.0, 0.2)]
    lr, wd = 1e-2, 0.01

    tp = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.AdamW([tp], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    torch_traj = []
    for g in grads:
        tp.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_([tp], 1.0)
        opt.step()
        torch_traj.append(tp.detach().numpy().copy())

    @jax.jit
    def run(w, gs):
        tx = make_optimizer(lr, wd, total_steps=len(grads))

        def body(carry, g):
            w, state = carry
            updates, state = tx.update(g, state, w)
            w = optax.apply_updates(w, updates)
            return (w, state), w

        return jax.lax.scan(body, (w, tx.init(w)), gs)[1]

    ours = np.asarray(run(jnp.asarray(w0), jnp.asarray(np.stack(grads))))
    # torch divides by (norm + 1e-6) when clipping: a 1e-6 relative difference on the clipped steps
    np.testing.assert_allclose(ours, np.stack(torch_traj), rtol=1e-5, atol=1e-6)
    assert np.abs(ours[-1] - w0).max() > 1e-2  # it moved


def _quadratic_run(lr, wd, total=25):
    """25 AdamW steps with warmup-cosine on a small quadratic; the optimizer is built inside the trace."""
    target = {"a": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -2.0])}
    params = jax.tree_util.tree_map(jnp.zeros_like, target)
    tx = make_optimizer(lr, wd, total_steps=total, schedule="warmup_cosine", warmup_ratio=0.2)

    def loss(p):
        return sum(jnp.sum((x - t) ** 2) for x, t in zip(jax.tree_util.tree_leaves(p),
                                                        jax.tree_util.tree_leaves(target)))

    def body(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    return jax.lax.scan(body, (params, tx.init(params)), None, length=total)[0][0]


def test_vmap_over_learning_rate_and_weight_decay_inside_jit():
    lrs = jnp.array([1e-2, 5e-2, 5e-2, 2e-1])
    wds = jnp.array([0.0, 0.0, 0.5, 0.01])
    batched = jax.jit(jax.vmap(_quadratic_run))(lrs, wds)
    traced = jax.jit(_quadratic_run)
    for i, (lr, wd) in enumerate(zip(lrs, wds)):
        single = traced(lr, wd)  # traced scalars, one program for every value
        constant = jax.jit(lambda: _quadratic_run(float(lr), float(wd)))()  # Python constants
        for name in ("a", "b"):
            np.testing.assert_allclose(batched[name][i], single[name], rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(batched[name][i], constant[name], rtol=1e-5, atol=1e-7)
    # the batch members really differ: by learning rate and by weight decay
    assert np.abs(np.asarray(batched["a"][0] - batched["a"][1])).max() > 1e-2
    assert np.abs(np.asarray(batched["a"][1] - batched["a"][2])).max() > 1e-3


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown learning-rate schedule 'linear'"):
        unit_schedule("linear", 10)
    with pytest.raises(ConfigError):
        make_optimizer(1e-3, 0.0, total_steps=10, schedule="cosine")
    with pytest.raises(ConfigError):
        learning_rate_at(1e-3, 0, total_steps=10, schedule="step")


def test_frozen_mask_and_global_norm():
    params = {"input_proj": {"kernel": jnp.ones((2, 2))}, "query_proj": {"kernel": jnp.ones((2, 2))},
              "cand_proj": {"kernel": jnp.ones((2, 2))}, "attn_norms_0": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}
    mask = trainable_mask(params, BACKBONE)
    assert mask == {"input_proj": {"kernel": False}, "query_proj": {"kernel": False},
                    "cand_proj": {"kernel": False}, "attn_norms_0": {"scale": True, "bias": True}}
    assert all(jax.tree_util.tree_leaves(trainable_mask(params)))
    np.testing.assert_allclose(global_norm(params), math.sqrt(18.0), rtol=1e-6)
    np.testing.assert_allclose(global_norm(params, mask), math.sqrt(6.0), rtol=1e-6)
    with pytest.raises(ValueError, match="needs params"):
        make_optimizer(1e-3, 0.0, total_steps=10, frozen=BACKBONE)
