"""Selections drawn from a selector: beam search and temperature sampling over each query's pool.

Both decode in eval mode (no dropout) from one encoding of each query, step by step with the selector's own
state update (:class:`~leverjax.core.model.PointerSelector`), so every variant works. A candidate is never
picked twice in one selection, and padded pool slots never. ``allow_stop=False`` (the default: a fixed number
of demonstrations, as the training data holds) leaves a STOP token out of the softmax, as the evaluation's
n-shot decode does; with ``allow_stop=True`` a STOP selector may pick STOP (position K), after which it picks
STOP again with probability 1.

* :func:`beam_search`: the ``width`` best sequences by summed log-probability (the original's
  ``beam_search_pointer``: every beam extended by every candidate, the best ``width`` kept).
* :func:`sample`: ``num_samples`` independent selections per query, each step a draw from
  softmax(logits / τ) over the candidates not yet picked (the Gumbel-max trick), with the log-probability of
  the selection under that sampling policy. At τ = 1 it equals the teacher-forced
  :meth:`~leverjax.core.model.Selector.log_probs` of the same selection (up to the weight ``exp(−100)`` the
  model leaves on picked candidates).

All functions are pure and jittable; ``rng`` is a JAX key.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def _decoding(selector, params, query_emb, cand_emb, cand_mask, num_steps: int, allow_stop: bool, body):
    """Runs ``body(module, ctx)`` inside the selector's module after encoding the queries once."""
    def fn(module):
        q, c = module.encode(query_emb, cand_emb, cand_mask, deterministic=True)
        ctx = module._context(q, c, cand_mask, num_steps, True)
        if module.config.stop and not allow_stop:
            ctx = {**ctx, "mask": ctx["mask"].at[:, -1].set(False)}
        return body(module, ctx)
    return nn.apply(fn, selector.module)({"params": params})


def _selectable(state, ctx, stop: bool):
    """bool ``[B, M, K']``: what a row may pick now (valid, not picked before; only STOP once ended)."""
    ok = ctx["mask"][:, None, :] & ~state["chosen"]
    if stop:
        k = ok.shape[-1]
        only_stop = jnp.arange(k) == k - 1
        ok = jnp.where(state["ended"][..., None], only_stop, ok)
    return ok


def _gather_rows(tree, rows):
    """Every leaf ``[B, M, ...]`` re-indexed along M by ``rows [B, M]``."""
    def one(x):
        idx = rows.reshape(rows.shape + (1,) * (x.ndim - 2))
        return jnp.take_along_axis(x, idx, axis=1)
    return jax.tree_util.tree_map(one, tree)


def beam_search(selector, params, query_emb, cand_emb, cand_mask, num_steps: int, width: int, *,
                allow_stop: bool = False):
    """The ``width`` most probable selections of ``num_steps`` picks per query.

    Returns ``picks [B, width, num_steps]`` (pool positions, best first; −1 for a beam that does not exist
    because the pool has fewer selections) and their log-probabilities ``[B, width]`` (−inf for those).
    """
    stop = bool(selector.config.stop)

    def body(module, ctx):
        b, k = ctx["keys"].shape[:2]
        state = module._init_state(ctx, width)
        score = jnp.full((b, width), NEG_INF).at[:, 0].set(0.0)
        picks = jnp.zeros((b, width, 0), jnp.int32)
        for t in range(num_steps):
            logp = jax.nn.log_softmax(jnp.where(ctx["mask"][:, None, :], module._logits(t, state, ctx), NEG_INF), -1)
            total = jnp.where(_selectable(state, ctx, stop), score[:, :, None] + logp, NEG_INF)
            score, flat = jax.lax.top_k(total.reshape(b, width * k), width)
            parent, label = flat // k, (flat % k).astype(jnp.int32)
            state = _gather_rows(state, parent)
            picks = jnp.concatenate([jnp.take_along_axis(picks, parent[:, :, None], axis=1), label[:, :, None]], -1)
            state = module._update(state, ctx, label, first=t == 0)
        picks = jnp.where(jnp.isfinite(score)[:, :, None], picks, -1)
        return picks, score

    return _decoding(selector, params, query_emb, cand_emb, cand_mask, num_steps, allow_stop, body)


def sample(selector, params, query_emb, cand_emb, cand_mask, num_steps: int, num_samples: int, rng, *,
           temperature: float = 1.0, allow_stop: bool = False):
    """``num_samples`` selections per query drawn from the policy at temperature τ (see the module docstring).

    Returns ``picks [B, num_samples, num_steps]`` (pool positions; K = STOP) and ``logp [B, num_samples]``, the
    log-probability of each selection under the sampling policy (softmax of logits / τ over what may be
    picked). ``temperature`` may be a traced scalar.
    """
    stop = bool(selector.config.stop)

    def body(module, ctx):
        b, k = ctx["keys"].shape[:2]
        state = module._init_state(ctx, num_samples)
        picks, logps = [], []
        for t, key in enumerate(jax.random.split(rng, num_steps)):
            logits = jnp.where(_selectable(state, ctx, stop), module._logits(t, state, ctx) / temperature, NEG_INF)
            logp = jax.nn.log_softmax(logits, -1)
            label = jnp.argmax(logits + jax.random.gumbel(key, logits.shape), -1).astype(jnp.int32)
            picks.append(label)
            logps.append(jnp.take_along_axis(logp, label[..., None], -1)[..., 0])
            state = module._update(state, ctx, label, first=t == 0)
        return jnp.stack(picks, -1), jnp.sum(jnp.stack(logps, -1), -1)

    return _decoding(selector, params, query_emb, cand_emb, cand_mask, num_steps, allow_stop, body)
