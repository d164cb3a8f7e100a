"""The pointer selector: a Flax (linen) transcription of the reference network (docs/reference.md §3).

Given a query embedding ``q [d]`` and its candidate pool ``C [K, d]`` the network picks demonstrations
one after another. Everything is batched over a leading query axis ``B``:

* :meth:`PointerSelector.encode` runs steps 1-5 once per query and pool (input projection, cross
  attention, dropout, query/candidate projections, L2 normalisation);
* :meth:`PointerSelector.score` scores all ``M`` trajectories of a query from that one encoding
  (teacher forcing, step 6), returning per-step log-probabilities ``[B, M, S, K]``;
* :meth:`PointerSelector.decode` greedily picks any number of steps for evaluation.

Parameter names follow the PyTorch original (``input_proj``, ``cross_attn_layers_{i}`` with the packed
``in_proj_weight [3H, H]``/``in_proj_bias`` and ``out_proj`` of ``torch.nn.MultiheadAttention``,
``attn_norms_{i}``, ``query_proj``, ``cand_proj``, ``query_update_gate``), so checkpoints map one to one.
Dense kernels are stored ``[in, out]`` (the transpose of a torch ``weight``).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# Logit given to a candidate already chosen in an earlier step. The reference uses this finite value
# (not -inf), so chosen candidates keep a tiny probability and take part in label smoothing.
CHOSEN_LOGIT = -100.0
# Logit of a padded pool slot: no probability mass at all (exp underflows to exactly 0 in float32).
PAD_LOGIT = -1e9


@dataclasses.dataclass(frozen=True)
class SelectorConfig:
    """Static shape and variant of the selector (changing any field means a new compile)."""

    hidden: int = 256  # H
    num_layers: int = 1  # L cross-attention layers
    num_heads: int = 1
    dropout: float = 0.5  # on the attended query and the projected candidates
    attn_dropout: float = 0.1
    temperature: float = 0.1  # logits = cosine / temperature
    gated: bool = True  # "v2 + V4-1 gate"; False is the "v2 static" variant (s_t = s_0)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over the last axis, like ``torch.nn.functional.normalize``."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def _identity_plus_noise(key, shape, dtype=jnp.float32):
    """Identity plus N(0, 0.01^2): the reference's init of ``query_proj`` and ``cand_proj``."""
    return jnp.eye(*shape, dtype=dtype) + 0.01 * jax.random.normal(key, shape, dtype)


def _input_proj_init(key, shape, dtype=jnp.float32):
    """Xavier-uniform, or the identity when the projection is square (d == H)."""
    if shape[0] == shape[1]:
        return jnp.eye(*shape, dtype=dtype)
    return nn.initializers.xavier_uniform()(key, shape, dtype)


def _torch_linear_kernel_init(key, shape, dtype=jnp.float32):
    """``torch.nn.Linear``'s default weight init (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Dropout(nn.Module):
    """Inverted dropout that draws 16 random bits per element instead of 32.

    Each 32-bit word of the PRNG gives two masks (the keep probability is rounded to a multiple of
    1/65536, and kept values are scaled by the inverse of that exact probability, so the expectation
    is unchanged). Random-bit generation is a large share of a training step on a CPU; this halves it.
    """

    rate: float

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        threshold = int(round((1.0 - self.rate) * 65536))
        if threshold <= 0:
            return jnp.zeros_like(x)
        n = x.size
        words = jax.random.bits(self.make_rng("dropout"), ((n + 1) // 2,), jnp.uint32)
        halves = jnp.concatenate([words & 0xFFFF, words >> 16])[:n].reshape(x.shape)
        keep = halves < threshold
        return jnp.where(keep, x * (65536.0 / threshold), 0.0).astype(x.dtype)


class CrossAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` with one query token attending over the candidates.

    Parameters are laid out like torch: ``in_proj_weight [3H, H]`` (rows: q, k, v), ``in_proj_bias [3H]``,
    ``out_proj`` (a Dense with bias). Padded candidates are excluded from the softmax.
    """

    hidden: int
    num_heads: int
    attn_dropout: float

    @nn.compact
    def __call__(self, query, keys, key_mask, *, deterministic: bool):
        h, nh = self.hidden, self.num_heads
        dh = h // nh
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * h, h))
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * h,))
        q = query @ w[:h].T + b[:h]  # [B, H]
        k = keys @ w[h:2 * h].T + b[h:2 * h]  # [B, K, H]
        v = keys @ w[2 * h:].T + b[2 * h:]
        q = q.reshape(q.shape[:-1] + (nh, dh))
        k = k.reshape(k.shape[:-1] + (nh, dh))
        v = v.reshape(v.shape[:-1] + (nh, dh))
        scores = jnp.einsum("bnd,bknd->bnk", q, k) / math.sqrt(dh)
        scores = jnp.where(key_mask[:, None, :], scores, PAD_LOGIT)
        attn = jax.nn.softmax(scores, axis=-1)
        attn = Dropout(self.attn_dropout)(attn, deterministic=deterministic)
        out = jnp.einsum("bnk,bknd->bnd", attn, v).reshape(query.shape[:-1] + (h,))
        return nn.Dense(h, kernel_init=_torch_linear_kernel_init, name="out_proj")(out)


class PointerSelector(nn.Module):
    """The reference pointer selector (docs/reference.md §3), batched over queries."""

    config: SelectorConfig

    def setup(self):
        cfg = self.config
        h = cfg.hidden
        self.input_proj = nn.Dense(h, use_bias=False, kernel_init=_input_proj_init)
        self.cross_attn_layers = [
            CrossAttention(h, cfg.num_heads, cfg.attn_dropout, name=f"cross_attn_layers_{i}")
            for i in range(cfg.num_layers)
        ]
        self.attn_norms = [nn.LayerNorm(epsilon=1e-5, name=f"attn_norms_{i}") for i in range(cfg.num_layers)]
        self.dropout = Dropout(cfg.dropout)
        self.query_proj = nn.Dense(h, use_bias=False, kernel_init=_identity_plus_noise)
        self.cand_proj = nn.Dense(h, use_bias=False, kernel_init=_identity_plus_noise)
        if cfg.gated:
            self.query_update_gate = nn.Dense(h, kernel_init=nn.initializers.xavier_uniform())

    # -- steps 1-5: once per query ---------------------------------------------------------------
    def encode(self, query_emb, cand_emb, cand_mask, *, deterministic: bool = True, projected: bool = False):
        """Encodes queries ``[B, d]`` and pools ``[B, K, d]`` into normalised states ``[B, H]``, ``[B, K, H]``.

        With ``projected=True`` the inputs are already ``input_proj`` outputs (``[B, H]``, ``[B, K, H]``):
        a frozen input projection can be applied once to the whole embedding table instead of to every
        pool again at every step.
        """
        q = query_emb if projected else self.input_proj(query_emb)
        c = cand_emb if projected else self.input_proj(cand_emb)
        for attn, norm in zip(self.cross_attn_layers, self.attn_norms):
            q = norm(q + attn(q, c, cand_mask, deterministic=deterministic))
        q = self.dropout(q, deterministic=deterministic)
        c = self.dropout(c, deterministic=deterministic)
        return l2_normalize(self.query_proj(q)), l2_normalize(self.cand_proj(c))

    # -- step 6 ---------------------------------------------------------------------------------
    def step_logits(self, state, cand, cand_mask, chosen):
        """Logits ``[B, M, K]`` of one selection step for query states ``[B, M, H]``.

        ``chosen [B, M, K]`` marks candidates picked in earlier steps (logit -100); padded pool slots
        get :data:`PAD_LOGIT` so they can never be picked and take no probability mass.
        """
        logits = jnp.einsum("bkh,bmh->bmk", cand, state) / self.config.temperature
        logits = jnp.where(chosen, CHOSEN_LOGIT, logits)
        return jnp.where(cand_mask[:, None, :], logits, PAD_LOGIT)

    def advance(self, state, query, picked):
        """Next query state after picking candidate vectors ``picked [B, M, H]`` (the V4-1 gate)."""
        if not self.config.gated:
            return jnp.broadcast_to(query[:, None, :], state.shape)
        g = nn.sigmoid(self.query_update_gate(jnp.concatenate([state, picked], axis=-1)))
        return l2_normalize(g * state + (1.0 - g) * picked)

    def score(self, query, cand, cand_mask, traj):
        """Teacher-forced per-step log-probabilities ``[B, M, S, K]`` of trajectories ``traj [B, M, S]``.

        ``query``/``cand`` come from :meth:`encode`; all M trajectories share that one encoding. Padded
        trajectory entries (−1) are scored as position 0; the losses mask them out.
        """
        b, m, s = traj.shape
        k = cand.shape[1]
        labels = jnp.maximum(traj, 0)
        state = jnp.broadcast_to(query[:, None, :], (b, m, query.shape[-1]))
        chosen = jnp.zeros((b, m, k), bool)
        out = []
        for t in range(s):
            logits = self.step_logits(state, cand, cand_mask, chosen)
            out.append(jax.nn.log_softmax(logits, axis=-1))
            label = labels[:, :, t]
            if t + 1 < s:
                picked = jnp.take_along_axis(cand[:, None, :, :], label[:, :, None, None], axis=2)[:, :, 0]
                state = self.advance(state, query, picked)
                chosen = chosen | jax.nn.one_hot(label, k, dtype=bool)
        return jnp.stack(out, axis=2)

    def decode(self, query, cand, cand_mask, num_steps: int):
        """Greedy picks ``[B, num_steps]`` (pool positions) and their per-step log-probs ``[B, num_steps]``.

        Any number of steps works, including more than the trained S; a step never repeats a pick
        while an unpicked valid candidate remains.
        """
        b, k = cand_mask.shape
        state = query[:, None, :]
        chosen = jnp.zeros((b, 1, k), bool)
        picks, logps = [], []
        for _ in range(num_steps):
            logits = self.step_logits(state, cand, cand_mask, chosen)[:, 0]
            pick = jnp.argmax(logits, axis=-1)
            picks.append(pick)
            logps.append(jnp.take_along_axis(jax.nn.log_softmax(logits, -1), pick[:, None], axis=-1)[:, 0])
            picked = jnp.take_along_axis(cand, pick[:, None, None], axis=1)
            state = self.advance(state, query, picked)
            chosen = chosen | jax.nn.one_hot(pick, k, dtype=bool)[:, None, :]
        return jnp.stack(picks, axis=1), jnp.stack(logps, axis=1)

    def __call__(self, query_emb, cand_emb, cand_mask, traj, *, deterministic: bool = True, projected: bool = False):
        """Encode + score: per-step log-probs ``[B, M, S, K]`` (used for ``init`` and as a shortcut)."""
        query, cand = self.encode(query_emb, cand_emb, cand_mask, deterministic=deterministic, projected=projected)
        return self.score(query, cand, cand_mask, traj)


def init_params(config: SelectorConfig, rng: jax.Array, dim: int, pool_size: int = 4, num_steps: int = 2):
    """Fresh parameters for embeddings of width ``dim`` (shapes do not depend on K, M or S)."""
    model = PointerSelector(config)
    q = jnp.zeros((1, dim), jnp.float32)
    c = jnp.zeros((1, pool_size, dim), jnp.float32)
    mask = jnp.ones((1, pool_size), bool)
    traj = jnp.zeros((1, 1, num_steps), jnp.int32).at[..., :].set(jnp.arange(num_steps) % pool_size)
    return model.init(rng, q, c, mask, traj)["params"]


def trajectory_log_probs(step_logp: jax.Array, traj: jax.Array) -> jax.Array:
    """Sequence log-prob ``[..., M]`` = Σ_t log p_t[label_t] from per-step log-probs ``[..., M, S, K]``.

    Padded trajectories (label −1) give 0; mask them where it matters.
    """
    labels = jnp.maximum(traj, 0)
    per_step = jnp.take_along_axis(step_logp, labels[..., None], axis=-1)[..., 0]
    return jnp.where(traj >= 0, per_step, 0.0).sum(-1)


@dataclasses.dataclass(frozen=True)
class Selector:
    """Pure functions of (params, arrays) around :class:`PointerSelector` for one static config."""

    config: SelectorConfig

    @property
    def module(self) -> PointerSelector:
        return PointerSelector(self.config)

    def _rngs(self, rng, deterministic):
        return None if deterministic else {"dropout": rng}

    def encode(self, params, query_emb, cand_emb, cand_mask, *, rng=None, deterministic=True):
        return self.module.apply({"params": params}, query_emb, cand_emb, cand_mask, deterministic=deterministic,
                                 method=PointerSelector.encode, rngs=self._rngs(rng, deterministic))

    def step_log_probs(self, params, query_emb, cand_emb, cand_mask, traj, *, rng=None, deterministic=True,
                       projected=False, per_trajectory=False):
        """Per-step log-probs ``[B, M, S, K]`` of every trajectory, encoding each query once.

        With ``per_trajectory=True`` and dropout on, each trajectory encodes its query and pool again with
        its own dropout mask (the query repeated M times, as the reference does), at M times the encoding
        cost; without dropout the result is the same as encoding once.
        """
        if per_trajectory and not deterministic:
            b, m, s = traj.shape
            out = self.module.apply({"params": params}, jnp.repeat(query_emb, m, axis=0),
                                    jnp.repeat(cand_emb, m, axis=0), jnp.repeat(cand_mask, m, axis=0),
                                    traj.reshape(b * m, 1, s), deterministic=False, projected=projected,
                                    rngs=self._rngs(rng, deterministic))
            return out.reshape(b, m, s, out.shape[-1])
        return self.module.apply({"params": params}, query_emb, cand_emb, cand_mask, traj,
                                 deterministic=deterministic, projected=projected,
                                 rngs=self._rngs(rng, deterministic))

    def log_probs(self, params, query_emb, cand_emb, cand_mask, traj, *, rng=None, deterministic=True,
                  projected=False, per_trajectory=False):
        """Sequence log-probs ``[B, M]`` of every trajectory (0 for padded ones)."""
        step = self.step_log_probs(params, query_emb, cand_emb, cand_mask, traj, rng=rng,
                                   deterministic=deterministic, projected=projected, per_trajectory=per_trajectory)
        return trajectory_log_probs(step, traj)

    def greedy(self, params, query_emb, cand_emb, cand_mask, num_steps: int):
        """Greedy picks ``[B, num_steps]`` (pool positions) in eval mode."""
        def fn(module):
            q, c = module.encode(query_emb, cand_emb, cand_mask, deterministic=True)
            return module.decode(q, c, cand_mask, num_steps)[0]
        return nn.apply(fn, self.module)({"params": params})
