"""The selector's building blocks, each a transcription of its PyTorch counterpart with torch's parameter
names, shapes and initialisation: ``nn.Linear`` (:class:`Dense` over :func:`matmul`), dropout with a
counter-based mask, ``nn.MultiheadAttention``, ``nn.GRUCell``, ``nn.Bilinear``, a Transformer encoder
layer, and ``F.normalize`` (:func:`l2_normalize`). :mod:`leverjax.core.model` assembles them."""
from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# Logit of a padded pool slot: no probability mass at all (exp underflows to exactly 0 in float32).
PAD_LOGIT = -1e9

def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over the last axis, like ``torch.nn.functional.normalize``, with its gradient
    also where ``x`` is zero (dropout can zero a whole small vector): ``sqrt(max(||x||², eps²))`` is the
    same denominator, but unlike ``max(sqrt(||x||²), eps)`` its derivative at 0 is 0, not ∞·0 = NaN."""
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def identity_plus_noise(key, shape, dtype=jnp.float32):
    """Identity plus N(0, 0.01^2): the reference's init of ``query_proj`` and ``cand_proj``."""
    return jnp.eye(*shape, dtype=dtype) + 0.01 * jax.random.normal(key, shape, dtype)


def input_proj_init(key, shape, dtype=jnp.float32):
    """Xavier-uniform, or the identity when the projection is square (d == H)."""
    if shape[0] == shape[1]:
        return jnp.eye(*shape, dtype=dtype)
    return nn.initializers.xavier_uniform()(key, shape, dtype)


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
    """``torch.nn.Linear``'s default weight init (kaiming-uniform with a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Dropout(nn.Module):
    """Inverted dropout whose random bits come from a counter-based hash instead of threefry.

    Element ``i`` is kept when ``hash(i, key) < round((1 − rate)·2³²)`` and then scaled by the inverse
    of that exact probability, so the expectation is unchanged. ``hash`` is ``lowbias32`` applied twice
    with the 64-bit key (from the module's ``dropout`` rng) mixed in: a handful of integer operations
    per element that fuse with the masking, where threefry's ~20 rounds per word made dropout 25% of a
    batch-16 GRPO step on a CPU (7% with the hash; timed with and without dropout). Different keys (steps,
    modules, runs) give independent-looking masks; nothing here needs cryptographic quality.
    """

    rate: float

    @nn.compact
    def __call__(self, x, *, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        threshold = min(int(round((1.0 - self.rate) * 2.0 ** 32)), 2 ** 32 - 1)
        if threshold <= 0:
            return jnp.zeros_like(x)
        key = self.make_rng("dropout")
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        key = key.reshape(-1).astype(jnp.uint32)
        index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
        keep = _lowbias32(_lowbias32(index ^ key[0]) + key[-1]) < jnp.uint32(threshold)
        return jnp.where(keep, x * (2.0 ** 32 / threshold), 0.0).astype(x.dtype)


def _lowbias32(v: jax.Array) -> jax.Array:
    """A 32-bit integer hash with good avalanche (C. Wellons, "hash-prospector", lowbias32)."""
    v = v ^ (v >> 16)
    v = v * jnp.uint32(0x7FEB352D)
    v = v ^ (v >> 15)
    v = v * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)


def torch_linear_bias_init(fan_in: int):
    """``torch.nn.Linear``'s default bias init: U(-1/sqrt(in), 1/sqrt(in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def normal_init(std: float):
    return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


def scaled_init(init, factor: float):
    return lambda key, shape, dtype=jnp.float32: factor * init(key, shape, dtype)


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., n] @ w [n, m]`` whose weight gradient multiplies a transposed copy of ``x`` taken in the
    forward pass: ``dW = xᵀ·g`` over all rows. Left to itself XLA's CPU backend computes that product from
    the row-major ``x`` and a transposed copy of the incoming gradient ``g`` made inside a loop fusion of
    everything that produces ``g`` (for the candidate projections: dropout masks recomputed, attention
    gradients added); those fusions took 39% of an SFT step. Transposing ``x`` instead is a plain copy.
    Equal to ``x @ w`` in value and gradient up to float rounding."""
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (jnp.swapaxes(x.reshape(-1, x.shape[-1]), 0, 1), w)


def _matmul_bwd(residuals, g):
    x_t, w = residuals
    return g @ w.T, x_t @ g.reshape(-1, g.shape[-1])


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
    """``nn.Dense`` (same parameters, names, defaults and init order) over :func:`matmul`.

    Called with a list of arrays, it applies to their concatenation along the last axis without forming
    it: each part meets its rows of the kernel, and the parts' leading axes broadcast against each
    other, so a part shared by many rows (a query state repeated over trajectories) is multiplied once.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x):
        parts = x if isinstance(x, (list, tuple)) else [x]
        widths = [p.shape[-1] for p in parts]
        kernel = self.param("kernel", self.kernel_init, (sum(widths), self.features), jnp.float32)
        starts = [sum(widths[:i]) for i in range(len(parts))]
        y = sum(matmul(p, kernel[a:a + w]) for p, a, w in zip(parts, starts, widths))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y


def torch_linear(features: int, fan_in: int, name: str, use_bias: bool = True) -> Dense:
    """A Dense with ``torch.nn.Linear``'s default init (weight and bias U(±1/sqrt(in)))."""
    return Dense(features, use_bias=use_bias, kernel_init=torch_linear_kernel_init,
                    bias_init=torch_linear_bias_init(fan_in), name=name)


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention`` (batch first) for any number of query tokens ``[..., Q, H]``
    over keys = values ``[..., K, H]``. Parameters are laid out like torch: ``in_proj_weight [3H, H]``
    (rows: q, k, v), ``in_proj_bias [3H]``, ``out_proj`` (a Dense with bias).
    ``key_mask [..., K]`` (or None) excludes keys (padded candidates); ``dropout`` acts on the
    attention weights."""

    hidden: int
    num_heads: int
    dropout: float

    @nn.compact
    def __call__(self, query, keys, key_mask, *, deterministic: bool):
        h, nh = self.hidden, self.num_heads
        dh = h // nh
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * h, h))
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * h,))
        heads = lambda x: x.reshape(x.shape[:-1] + (nh, dh))  # noqa: E731
        q = heads(matmul(query, w[:h].T) + b[:h])
        w_k, b_k, w_v, b_v = w[h:2 * h], b[h:2 * h], w[2 * h:], b[2 * h:]
        # Fewer query tokens than keys (the cross-attention has one) never project the keys: a score
        # q·(W_k c + b_k) is (W_kᵀ q)·c plus q·b_k, the same for every key, which the softmax drops; an
        # output Σ a (W_v c + b_v) is W_v (Σ a c) + (Σ a) b_v (Σ a = 1 unless dropout zeroed some a). That
        # costs 2Q·H² + 2Q·heads·K·H multiply-adds instead of 2K·H² + 2Q·K·H; the cheaper one is taken
        # (self-attention, Q = K, keeps torch's order). Equal up to float rounding.
        n_q, n_k = query.shape[-2], keys.shape[-2]
        few = n_q * (h + n_k * (nh - 1)) < n_k * h
        if few:
            scores = jnp.einsum("...qne,...ke->...nqk", jnp.einsum("...qnd,nde->...qne", q, w_k.reshape(nh, dh, h)),
                                keys)
        else:
            scores = jnp.einsum("...qnd,...knd->...nqk", q, heads(matmul(keys, w_k.T) + b_k))
        scores = scores / math.sqrt(dh)
        if key_mask is not None:
            scores = jnp.where(key_mask[..., None, None, :], scores, PAD_LOGIT)
        attn = Dropout(self.dropout)(jax.nn.softmax(scores, axis=-1), deterministic=deterministic)
        if few:
            mixed = jnp.einsum("...nqk,...ke->...qne", attn, keys)
            weight = jnp.swapaxes(jnp.sum(attn, -1), -1, -2)[..., None]  # Σ a per query token and head
            out = jnp.einsum("...qne,nde->...qnd", mixed, w_v.reshape(nh, dh, h)) + weight * heads(b_v)
        else:
            out = jnp.einsum("...nqk,...knd->...qnd", attn, heads(matmul(keys, w_v.T) + b_v))
        out = out.reshape(query.shape[:-1] + (h,))
        return Dense(h, kernel_init=torch_linear_kernel_init, name="out_proj")(out)


class GRUCell(nn.Module):
    """``torch.nn.GRUCell`` with torch's parameter layout (``weight_ih``/``weight_hh [3H, H]`` with rows
    r, z, n; ``bias_ih``/``bias_hh [3H]``) and init (all U(±1/sqrt(H)))."""

    hidden: int

    @nn.compact
    def __call__(self, x, h, h_rows=None):
        """``h_rows``: the distinct rows of ``h`` when ``h`` repeats them (broadcasting to ``h``), so that
        ``W_hh h`` is computed once per distinct row."""
        n = self.hidden
        init = torch_linear_bias_init(n)
        w_ih = self.param("weight_ih", init, (3 * n, n))
        w_hh = self.param("weight_hh", init, (3 * n, n))
        b_ih = self.param("bias_ih", init, (3 * n,))
        b_hh = self.param("bias_hh", init, (3 * n,))
        gi = matmul(x, w_ih.T) + b_ih
        gh = matmul(h if h_rows is None else h_rows, w_hh.T) + b_hh
        r = jax.nn.sigmoid(gi[..., :n] + gh[..., :n])
        z = jax.nn.sigmoid(gi[..., n:2 * n] + gh[..., n:2 * n])
        c = jnp.tanh(gi[..., 2 * n:] + r * gh[..., 2 * n:])
        return (1.0 - z) * c + z * h


class Bilinear(nn.Module):
    """``torch.nn.Bilinear(H, H, 1, bias=False)``: ``weight [1, H, H]``, xavier-uniform like torch
    (fan_in = H·H, fan_out = H)."""

    hidden: int

    @nn.compact
    def __call__(self):
        h = self.hidden
        bound = math.sqrt(6.0 / (h * h + h))
        return self.param("weight", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound), (1, h, h))


class EncoderLayer(nn.Module):
    """One pre-LN ``torch.nn.TransformerEncoderLayer`` (GELU, feed-forward 4H, dropout ``rate`` on the
    attention weights, after the attention, inside and after the feed-forward)."""

    hidden: int
    num_heads: int
    rate: float

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        h = self.hidden
        drop = lambda y: Dropout(self.rate)(y, deterministic=deterministic)  # noqa: E731
        y = nn.LayerNorm(epsilon=1e-5, name="norm1")(x)
        x = x + drop(MultiheadAttention(h, self.num_heads, self.rate, name="self_attn")(
            y, y, mask, deterministic=deterministic))
        y = nn.LayerNorm(epsilon=1e-5, name="norm2")(x)
        y = drop(jax.nn.gelu(torch_linear(4 * h, h, "linear1")(y), approximate=False))
        return x + drop(torch_linear(h, 4 * h, "linear2")(y))


class CandidateEncoder(nn.Module):
    """``torch.nn.TransformerEncoder`` of one :class:`EncoderLayer` (``layers_0``), no final norm."""

    hidden: int
    num_heads: int
    rate: float

    @nn.compact
    def __call__(self, x, mask, *, deterministic: bool):
        return EncoderLayer(self.hidden, self.num_heads, self.rate, name="layers_0")(
            x, mask, deterministic=deterministic)
