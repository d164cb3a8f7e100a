"""SFT, RCE and GRPO losses (docs/reference.md §4) as pure functions of arrays.

Shapes: ``B`` queries, ``M`` trajectories per query, ``S`` steps, ``K`` pool slots. Inputs are the
per-step log-probabilities ``[B, M, S, K]`` from :meth:`leverjax.core.model.Selector.step_log_probs` (or the
sequence log-probs ``[B, M]`` for GRPO) plus boolean masks for padded pool slots, trajectories and
queries. Every loss is a mean over the *valid* queries; a batch without any gives 0, never NaN.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from leverjax.errors import ConfigError

KL_ESTIMATORS = ("reference", "k3", "none")
# exp() of a sequence log-ratio beyond this would overflow float32 and turn the loss into inf/NaN.
# The bound never binds in sane runs (a ratio of e^20 ≈ 5e8); it only keeps a diverging run finite.
MAX_LOG_RATIO = 20.0


def masked_mean(x, mask, axis=None):
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def cross_entropy(step_logp, labels, cand_mask, label_smoothing=0.0):
    """Per-step cross-entropy with label smoothing, torch semantics: ``[...]`` from ``[..., K]``.

    ``(1 − ε)·(−log p[label]) + ε·mean_k(−log p_k)`` where the mean runs over the pool's valid slots
    (chosen candidates with their −100 logit included, padded slots excluded). ``cand_mask`` must
    broadcast against ``step_logp``.
    """
    cand_mask = jnp.broadcast_to(cand_mask, step_logp.shape)
    nll = -jnp.take_along_axis(step_logp, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    smooth = -jnp.sum(jnp.where(cand_mask, step_logp, 0.0), -1) / jnp.maximum(jnp.sum(cand_mask, -1), 1)
    return (1.0 - label_smoothing) * nll + label_smoothing * smooth


def sft_loss(step_logp, labels, cand_mask, query_mask, label_smoothing=0.0):
    """Supervised CE: mean over valid queries and steps.

    ``step_logp [B, S, K]``, ``labels [B, S]`` (pool positions), ``cand_mask [B, K]``, ``query_mask [B]``.
    """
    ce = cross_entropy(step_logp, labels, cand_mask[:, None, :], label_smoothing)  # [B, S]
    return masked_mean(ce.mean(-1), query_mask)


def rce_temperature(step, total_steps, tau_start=2.0, tau_end=0.5):
    """The RCE temperature at optimizer step ``step`` of ``total_steps``: linear from τ₀ at the first step
    to τ₁ at the last (a phase of a single step uses τ₁, as the reference does)."""
    frac = jnp.where(total_steps <= 1, 1.0, jnp.clip(step / jnp.maximum(total_steps - 1, 1), 0.0, 1.0))
    return tau_start + (tau_end - tau_start) * frac


def rce_weights(rewards, traj_mask, tau):
    """``softmax(reward/τ)`` over each query's valid trajectories ``[B, M]`` (0 where masked)."""
    logits = jnp.where(traj_mask, rewards / tau, -jnp.inf)
    w = jax.nn.softmax(jnp.where(traj_mask.any(-1, keepdims=True), logits, 0.0), axis=-1)
    return jnp.where(traj_mask, w, 0.0)


def rce_loss(step_logp, traj, traj_mask, cand_mask, rewards, tau, query_mask=None, label_smoothing=0.0):
    """Reward-weighted cross-entropy: mean over valid queries of Σ_m w_m·Σ_t CE_t.

    ``step_logp [B, M, S, K]``, ``traj [B, M, S]``, ``traj_mask [B, M]``, ``cand_mask [B, K]``,
    ``rewards [B, M]``, ``tau`` a scalar. ``query_mask [B]`` drops padded batch rows.
    """
    ce = cross_entropy(step_logp, traj, cand_mask[:, None, None, :], label_smoothing).sum(-1)  # [B, M]
    per_query = jnp.sum(rce_weights(rewards, traj_mask, tau) * ce, -1)
    valid = traj_mask.any(-1) if query_mask is None else (traj_mask.any(-1) & query_mask)
    return masked_mean(per_query, valid)


class GRPOTerms(NamedTuple):
    """The GRPO loss and its parts, each a scalar mean over the valid queries of the batch."""

    loss: jax.Array
    ppo: jax.Array
    kl: jax.Array
    mean_ratio: jax.Array
    clip_fraction: jax.Array  # per query: share of its trajectories with ratio outside [1 − ε, 1 + ε_high]


def kl_terms(logp_new, logp_ref, estimator: str = "reference"):
    """Per-trajectory KL estimate ``[B, M]`` from sequence log-probs.

    ``reference``: ρ − 1 − log ρ with ρ = π_new/π_ref (the original's formula); ``k3``: r − 1 − log r with
    r = π_ref/π_new (Schulman's k3 estimator of KL(π_new‖π_ref), as in TRL); ``none``: 0.
    """
    log_ratio = jnp.clip(logp_new - logp_ref, -MAX_LOG_RATIO, MAX_LOG_RATIO)
    if estimator == "reference":
        return jnp.exp(log_ratio) - 1.0 - log_ratio
    if estimator == "k3":
        return jnp.exp(-log_ratio) - 1.0 + log_ratio
    if estimator == "none":
        return jnp.zeros_like(log_ratio)
    raise ConfigError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


def grpo_loss(logp_new, logp_ref, advantages, traj_mask, *, clip_eps=0.2, clip_eps_high=None, kl_coef=0.1,
              kl_estimator: str = "reference", query_mask=None, logp_old=None, dual_clip=0.0) -> GRPOTerms:
    """PPO-clip + KL penalty per query group, mean over valid queries.

    ``logp_new``, ``logp_ref``, ``advantages``, ``traj_mask``: ``[B, M]``. ρ = exp(ℓ_new − ℓ_old) with
    ℓ_old = ``logp_old`` (the policy that sampled the trajectories, on-policy GRPO) or, by default, ℓ_ref
    (the reference: one policy for the ratio and the KL); ppo = −mean_m min(ρA, clip(ρ, 1 − ε, 1 + ε_high)·A);
    with ``dual_clip`` c > 1 the surrogate of a negative advantage is at least c·A (the loss at most c·|A|;
    0 = off); kl = mean_m of :func:`kl_terms` (ℓ_new against ℓ_ref); loss = ppo + kl_coef·kl (pass
    ``kl_coef = 0`` for the reference's clip-only mode). ``clip_eps_high`` defaults to ``clip_eps``.
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = jnp.clip(logp_new - (logp_ref if logp_old is None else logp_old), -MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(ratio * advantages, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + eps_high) * advantages)
    surrogate = jnp.where((dual_clip > 0) & (advantages < 0), jnp.maximum(surrogate, dual_clip * advantages),
                          surrogate)
    ppo_q = -masked_mean(surrogate, traj_mask, axis=-1)
    kl_q = masked_mean(kl_terms(logp_new, logp_ref, kl_estimator), traj_mask, axis=-1)
    valid = traj_mask.any(-1) if query_mask is None else (traj_mask.any(-1) & query_mask)
    outside = (ratio < 1.0 - clip_eps) | (ratio > 1.0 + eps_high)
    # Per-query means first, then the mean over queries (like every other term): a batch of B queries
    # logs what B one-query steps of the reference would log on average, whatever the M of each query.
    ratio_q = masked_mean(ratio, traj_mask, axis=-1)
    outside_q = masked_mean(outside.astype(ratio.dtype), traj_mask, axis=-1)
    return GRPOTerms(
        loss=masked_mean(ppo_q + kl_coef * kl_q, valid),
        ppo=masked_mean(ppo_q, valid),
        kl=masked_mean(kl_q, valid),
        mean_ratio=masked_mean(ratio_q, valid),
        clip_fraction=masked_mean(outside_q, valid),
    )


def step_entropy(step_logp):
    """The entropy of each step's distribution ``[...]`` from its log-probs ``[..., K]`` (−inf or ≈ −100 for
    what cannot be picked: they add 0). Safe to differentiate: masked entries give 0, never NaN."""
    finite = jnp.isfinite(step_logp)
    logp = jnp.where(finite, step_logp, 0.0)
    return -jnp.sum(jnp.where(finite, jnp.exp(logp) * logp, 0.0), -1)


def adapt_beta(beta, kl, *, kl_high=0.1, kl_low=0.01, factor=1.5, beta_min=1e-3, beta_max=10.0):
    """The reference's adaptive KL coefficient after one optimizer step.

    kl > ``kl_high`` → β·``factor``; kl < ``kl_low`` → β/``factor``; then β is kept in [β_min, β_max].
    """
    beta = jnp.where(kl > kl_high, beta * factor, jnp.where(kl < kl_low, beta / factor, beta))
    return jnp.clip(beta, beta_min, beta_max)
