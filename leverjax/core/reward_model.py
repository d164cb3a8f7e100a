"""A learned scorer for real data: a small network that predicts a prompt's VQA accuracy from embeddings.

On real data every score of a new selection is one VLM generation. On-policy GRPO
(:mod:`leverjax.core.rollout`) can score its samples with this model instead, fit once on the data's
labelled trajectories (each a query and its ordered demonstrations, labelled with the accuracy ``acc`` the
VLM got).

The network, for a query embedding ``q`` and its demonstrations ``d_1 … d_n`` (rows of the embedding table,
in prompt order; ``n ≤ S``)::

    h_t   = relu([q ⊙ d_t, d_t] W_in + b_in + pos_t)          one vector per demonstration, pos_t its place
    pool  = mean_t h_t                                        over the n demonstrations shown
    z     = relu([pool, q W_q] W_h + b_h)
    score = sigmoid(z · w_out + b_out)                        the predicted accuracy, in (0, 1)

It is fit by AdamW on the binary cross-entropy with the accuracy as a soft target, over the labelled
trajectories of the train split, stopped early on a tenth of them; those of the val split are held out, and
:func:`calibration` reports how well it predicts them. It is a property of the data, not of a run: every run of a grid scores with the same model.

All functions are pure; :func:`fit` runs one jitted ``lax.scan``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

HIDDEN = 64
STEPS = 2000
STOP_SHARE = 0.1
CHECK_EVERY = 50
BATCH = 256
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4


def init(rng, dim: int, num_steps: int, hidden: int = HIDDEN) -> dict:
    """Fresh parameters for ``dim``-dimensional embeddings and selections of at most ``num_steps`` demos."""
    k = jax.random.split(rng, 4)

    def dense(key, fan_in, fan_out):
        return jax.random.normal(key, (fan_in, fan_out), jnp.float32) / math.sqrt(fan_in)

    return {"w_in": dense(k[0], 2 * dim, hidden), "b_in": jnp.zeros(hidden), "pos": jnp.zeros((num_steps, hidden)),
            "w_q": dense(k[1], dim, hidden), "w_h": dense(k[2], 2 * hidden, hidden), "b_h": jnp.zeros(hidden),
            "w_out": dense(k[3], hidden, 1)[:, 0], "b_out": jnp.zeros(())}


def logits(params, query_emb, demo_emb, counts):
    """Logits ``[...]`` of the predicted accuracy: ``query_emb [..., d]``, ``demo_emb [..., S, d]`` (prompt
    order), ``counts [...]`` the demonstrations shown (the first ``counts`` of S; at least one is used)."""
    s = demo_emb.shape[-2]
    q = query_emb[..., None, :]
    h = jax.nn.relu(jnp.concatenate([q * demo_emb, demo_emb], -1) @ params["w_in"] + params["b_in"]
                    + params["pos"][:s])
    shown = (jnp.arange(s) < jnp.maximum(counts, 1)[..., None]).astype(h.dtype)
    pool = jnp.sum(h * shown[..., None], -2) / jnp.sum(shown, -1, keepdims=True)
    z = jax.nn.relu(jnp.concatenate([pool, query_emb @ params["w_q"]], -1) @ params["w_h"] + params["b_h"])
    return z @ params["w_out"] + params["b_out"]


def score(params, query_emb, demo_emb, counts):
    """The predicted accuracy ``[...]`` in (0, 1) (see :func:`logits`)."""
    return jax.nn.sigmoid(logits(params, query_emb, demo_emb, counts))


def examples(emb, query_ids, pool_ids, traj, acc, rows):
    """The labelled trajectories of query rows ``rows`` as training examples: ``(query_emb [n, d],
    demo_emb [n, S, d], target [n], query_row [n])`` (numpy; ``query_row``: the row each example belongs to).
    ``pool_ids`` ``[Q, K]``, ``traj`` ``[Q, M, S]`` (−1 padding)."""
    emb, traj, rows = np.asarray(emb, np.float32), np.asarray(traj), np.asarray(rows, np.int64)
    r, m = np.nonzero(traj[rows, :, 0] >= 0)  # (index into rows, trajectory) of every labelled trajectory
    r = rows[r]
    demos = np.take_along_axis(np.asarray(pool_ids)[r], traj[r, m], axis=1)
    return (emb[np.asarray(query_ids)[r]], emb[demos], np.asarray(acc, np.float32)[r, m], r)


def fit(query_emb, demo_emb, target, *, seed: int = 0, steps: int = STEPS, batch: int = BATCH,
        learning_rate: float = LEARNING_RATE, weight_decay: float = WEIGHT_DECAY, hidden: int = HIDDEN,
        stop_share: float = STOP_SHARE, check_every: int = CHECK_EVERY) -> dict:
    """Parameters fit to predict ``target [n]`` (accuracies in [0, 1]) from the examples of :func:`examples`,
    by AdamW steps on minibatches of ``batch`` drawn with replacement. A seeded ``stop_share`` of the examples
    is kept out of the steps; every ``check_every`` steps the loss on them is measured, and the parameters with
    the lowest are returned (early stopping, at most ``steps`` steps: labels of one VLM answer are noisy and a
    network this size would learn them by heart). The same inputs give the same parameters."""
    n, s, d = demo_emb.shape
    if n == 0:
        raise ValueError("the reward model has no labelled trajectory to fit")
    rng = jax.random.PRNGKey(seed)
    params = init(rng, d, s, hidden)
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)
    order = np.random.default_rng(seed).permutation(n)
    n_stop = int(round(stop_share * n)) if n >= 10 else 0
    stop_idx, fit_idx = jnp.asarray(order[:n_stop]), jnp.asarray(order[n_stop:])
    q_all, d_all, t_all = jnp.asarray(query_emb), jnp.asarray(demo_emb), jnp.asarray(target)
    m = min(batch, len(fit_idx))

    def loss_fn(p, idx):
        z = logits(p, q_all[idx], d_all[idx], jnp.full(idx.shape, s))
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, t_all[idx]))

    def step(carry, key):
        p, opt = carry
        idx = fit_idx[jax.random.randint(key, (m,), 0, len(fit_idx))]
        grads = jax.grad(loss_fn)(p, idx)
        updates, opt = tx.update(grads, opt, p)
        return (optax.apply_updates(p, updates), opt), None

    def chunk(carry, keys):
        p, opt, best, best_loss = carry
        (p, opt), _ = jax.lax.scan(step, (p, opt), keys)
        loss = loss_fn(p, stop_idx) if n_stop else jnp.float32(0.0)
        better = loss < best_loss
        best = jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), p, best)
        return (p, opt, best, jnp.where(better, loss, best_loss)), loss

    chunks = max(1, steps // check_every)

    @jax.jit
    def run(p):
        keys = jax.random.split(jax.random.fold_in(rng, 1), chunks * check_every).reshape(chunks, check_every, -1)
        start = loss_fn(p, stop_idx) if n_stop else jnp.float32(jnp.inf)
        (_, _, best, _), _ = jax.lax.scan(chunk, (p, tx.init(p), p, start), keys)
        return best

    return run(params)


def calibration(params, query_emb, demo_emb, target, groups=None, bins: int = 10) -> dict:
    """How well the model predicts held-out labels ``target [n]``: mean squared error, Pearson r, the mean
    Spearman correlation within each query's trajectories (``groups [n]``, the query of each example; what the
    group-relative advantages use) and a reliability table: ``bins`` equal-width bins of the prediction, each
    with its count, mean prediction and mean label. Plain floats (``None`` where undefined)."""
    from scipy import stats

    n, s = demo_emb.shape[:2]
    if n == 0:
        return {"examples": 0}
    pred = np.asarray(jax.jit(score)(params, jnp.asarray(query_emb), jnp.asarray(demo_emb), jnp.full((n,), s)),
                      np.float64)
    target = np.asarray(target, np.float64)
    out = {"examples": int(n), "mse": float(np.mean((pred - target) ** 2)),
           "mse_of_the_mean": float(np.mean((target.mean() - target) ** 2)),
           "pearson_r": (float(stats.pearsonr(pred, target)[0])
                         if np.std(pred) > 0 and np.std(target) > 0 else None)}
    if groups is not None:
        rhos = []
        groups = np.asarray(groups)
        for g in np.unique(groups):
            sel = groups == g
            if sel.sum() >= 3 and np.std(target[sel]) > 0 and np.std(pred[sel]) > 0:
                rhos.append(stats.spearmanr(pred[sel], target[sel])[0])
        out["within_query_spearman"] = float(np.mean(rhos)) if rhos else None
        out["queries_ranked"] = len(rhos)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(pred, edges[1:-1]), 0, bins - 1)
    out["reliability"] = [{"bin": [float(edges[b]), float(edges[b + 1])], "count": int((which == b).sum()),
                           "mean_prediction": float(pred[which == b].mean()) if (which == b).any() else None,
                           "mean_label": float(target[which == b].mean()) if (which == b).any() else None}
                          for b in range(bins)]
    return out
