"""On-policy GRPO's rollouts: selections sampled from the current policy, scored, and turned into advantages.

One GRPO step with ``grpo_mode=on_policy`` (:meth:`leverjax.core.train.Pipeline.on_policy_step`):

1. **Sample** ``rollouts`` = M selections of S demonstrations per query from the current policy
   (:func:`leverjax.core.sampling.sample`: Gumbel top-S without replacement over the pool at
   ``rollout_temperature``; STOP allowed where the selector has one).
2. **Score** each (query, ordered demonstrations) with the ``rollout_scorer`` (:func:`score_selections`):
   the simulator's exact expected accuracy (``oracle``), its one-answer VQA score (``oracle_realised``, what
   one VLM generation gives), or the reward model (``reward_model``, :mod:`leverjax.core.reward_model`).
   Every scored selection is one scorer call (on real data one VLM generation); the state counts them.
3. **Dynamic sampling** (DAPO, ``dynamic_sampling`` = budget > 0): a group whose raw scores are all equal
   (:func:`flat_groups`) carries no signal; it is sampled again, up to the budget, and dropped if still flat.
4. **Advantages**: the group-relative estimator of ``advantage`` over the M scores, or ReMax (``remax``): the
   score minus the score of the policy's greedy selection (one more scorer call per query).
5. **Update**: ``inner_epochs`` = μ optimizer steps on these samples with the PPO ratio against the policy
   that sampled them (π_old; at the first of the μ steps ratio = 1 exactly) and the KL to π_ref as offline
   GRPO has it, minus ``entropy_coef`` times the policy's mean per-step entropy. Eval mode throughout (no
   dropout), so the ratio measures only the parameters' change.

All of it is jittable and runs inside the epoch's ``lax.scan``, vmapped over runs like every other phase.
"""
from __future__ import annotations

import jax.numpy as jnp

from leverjax.core import reward_model as rm_lib
from leverjax.data.synth import oracle_accuracy, realised_accuracy

SCORERS = ("oracle", "oracle_realised", "reward_model")


def selection_rows(pool_ids, picks):
    """Global rows ``[..., S]`` of the demonstrations of ``picks [..., S]`` (pool positions into
    ``pool_ids [..., K]``, broadcast over the picks' middle axes; position K = STOP), and how many are shown
    ``[...]``: the picks before the first STOP. STOP entries point at pool position 0 (never shown)."""
    k = pool_ids.shape[-1]
    is_stop = picks >= k
    counts = jnp.where(is_stop.any(-1), jnp.argmax(is_stop, -1), picks.shape[-1]).astype(jnp.int32)
    pools = pool_ids
    if pool_ids.ndim < picks.ndim:  # one pool for the M selections of its query
        pools = jnp.broadcast_to(pool_ids[..., None, :], picks.shape[:-1] + (k,))
    rows = jnp.take_along_axis(pools, jnp.where(is_stop, 0, picks), axis=-1)
    return rows, counts


def score_selections(scorer: str, oracle, rm_params, emb, query_rows, rows, counts, *, stop: bool):
    """The score ``[B, M]`` of showing ``rows [B, M, S]`` (the first ``counts [B, M]`` of them, prompt order)
    to ``query_rows [B]``. A selection that stops before its first pick scores as one demonstration (the
    evaluation's ``oracle_acc_adaptive`` does the same)."""
    b, m, s = rows.shape
    q = jnp.repeat(query_rows, m)
    r, c = rows.reshape(b * m, s), counts.reshape(b * m)
    if scorer == "reward_model":
        out = rm_lib.score(rm_params, emb[q], emb[r], c)
    else:
        fn = oracle_accuracy if scorer == "oracle" else realised_accuracy
        if not stop:
            out = fn(oracle, q, r)
        else:
            out = fn(oracle, q, r[:, :1])
            for n in range(2, s + 1):
                out = jnp.where(c == n, fn(oracle, q, r[:, :n]), out)
    return out.reshape(b, m).astype(jnp.float32)


def flat_groups(scores):
    """bool ``[B]``: the groups whose M raw scores are all equal (no group-relative signal)."""
    return jnp.all(scores == scores[:, :1], axis=-1)


def remax_advantages(scores, greedy_scores, mask, clip):
    """ReMax: ``scores [B, M]`` minus the greedy selection's score ``[B]``, clipped to ±``clip``, 0 where
    ``mask [B, M]`` is False."""
    return jnp.where(mask, jnp.clip(scores - greedy_scores[:, None], -clip, clip), 0.0)


def group_stats(scores, mask) -> dict:
    """TRL's reward statistics of one step over its valid groups (``mask [B, M]``, whole groups): ``reward``
    (mean score), ``reward_std`` (mean over groups of the within-group standard deviation) and
    ``frac_reward_zero_std`` (the share of flat groups, :func:`flat_groups`: exactly equal scores)."""
    m = mask.astype(jnp.float32)
    groups = mask.any(-1)
    n_groups = jnp.maximum(groups.sum(), 1)
    count = jnp.maximum(m.sum(-1), 1.0)
    mean = jnp.sum(scores * m, -1) / count
    std = jnp.sqrt(jnp.sum(((scores - mean[:, None]) ** 2) * m, -1) / count)
    return {"reward": jnp.sum(scores * m) / jnp.maximum(m.sum(), 1.0),
            "reward_std": jnp.sum(jnp.where(groups, std, 0.0)) / n_groups,
            "frac_reward_zero_std": jnp.sum(groups & flat_groups(scores)) / n_groups}
