"""AdamW + global-norm clipping + learning-rate schedule, with traceable hyperparameters.

:func:`make_optimizer` is called *inside* the traced training function with the peak learning rate
and weight decay as (possibly traced) scalars, so one compiled program serves runs with different
values under ``vmap``. The schedule's shape (``constant`` or ``warmup_cosine``, warmup ratio, step
count) is static. The optimizer object itself is never stored in a pytree; only its state is.

Frozen parameter groups (the GRPO "frozen backbone") are an optax mask: frozen leaves get a zero
update, no weight decay, no Adam moments, and their gradients stay out of the clipping norm.
"""
from __future__ import annotations

from typing import Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from leverjax.errors import ConfigError

SCHEDULES = ("constant", "warmup_cosine")
# The modules the reference freezes in GRPO when "frozen backbone" is on (docs/reference.md §4).
BACKBONE = ("input_proj", "query_proj", "cand_proj")


def unit_schedule(kind: str, total_steps: int, warmup_ratio: float = 0.05) -> Callable[[jax.Array], jax.Array]:
    """A schedule with peak 1.0 (multiply by the traced peak learning rate)."""
    if kind == "constant":
        return lambda count: jnp.ones((), jnp.float32)
    if kind == "warmup_cosine":
        total = max(int(total_steps), 1)
        warmup = int(round(warmup_ratio * total))
        return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=warmup, decay_steps=total, end_value=0.0)
    raise ConfigError(f"unknown learning-rate schedule {kind!r}; valid: {', '.join(SCHEDULES)}")


def trainable_mask(params, frozen: Iterable[str] = ()) -> dict:
    """A pytree of bools like ``params``: False for every leaf under a top-level module in ``frozen``."""
    frozen = set(frozen)
    return {name: jax.tree_util.tree_map(lambda _: name not in frozen, sub) for name, sub in params.items()}


def make_optimizer(learning_rate, weight_decay, *, total_steps: int, schedule: str = "constant",
                   warmup_ratio: float = 0.05, clip_norm: float = 1.0, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, frozen: Iterable[str] = (), params=None) -> optax.GradientTransformation:
    """AdamW (torch semantics: decoupled decay scaled by the learning rate) after global-norm clipping.

    ``learning_rate`` and ``weight_decay`` may be traced scalars. With ``frozen`` module names, ``params``
    must be given to build the mask.
    """
    unit = unit_schedule(schedule, total_steps, warmup_ratio)
    tx = optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(lambda count: learning_rate * unit(count), b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
    )
    frozen = tuple(frozen)
    if not frozen:
        return tx
    if params is None:
        raise ValueError("make_optimizer needs params to build the frozen-parameter mask")
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "frozen", trainable_mask(params, frozen))
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def learning_rate_at(learning_rate, step, *, total_steps: int, schedule: str = "constant",
                     warmup_ratio: float = 0.05):
    """The learning rate the optimizer applies at ``step`` (for logging)."""
    return learning_rate * unit_schedule(schedule, total_steps, warmup_ratio)(step)


def global_norm(tree, mask=None):
    """The global L2 norm of a gradient pytree (of its trainable leaves when ``mask`` is given)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if mask is not None:
        leaves = [x for x, m in zip(leaves, jax.tree_util.tree_leaves(mask)) if m]
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves)) if leaves else jnp.zeros(())
