"""Offline evaluation of a selector on a split (docs/reference.md §7).

All metrics are computed in eval mode (no dropout) from the labelled trajectories and the greedy
selections, per query, then averaged over the split's queries:

=========================  ==========================================================================
``loss``                   the validation loss: RCE on raw rewards at τ = 1 (the reference's)
``expected_reward``        Σ_m π(m)·r_m with π the policy renormalised over the query's labelled trajectories
``top1_reward``            reward of the labelled trajectory the policy ranks first
``greedy_labelled``        share of queries whose greedy S-step selection is a labelled trajectory
``greedy_labelled_reward`` mean reward of those selections (NaN when there is none)
``changed_vs_ref``         share of queries whose greedy S-step selection differs from the reference policy's
``redundancy``             mean pairwise cosine of the embeddings of the greedy ``shots`` demonstrations
``oracle_acc_n``           exact expected accuracy of the greedy n-shot selection (synthetic data, n ≤ 4)
``realised_acc_n``         the VQA score of the simulated VLM's one answer to that prompt (synthetic data
                           with an answer seed; :func:`leverjax.data.synth.realised_accuracy`): what a
                           researcher evaluating with the VLM would see. On the test split, only the questions
                           of ``test_questions`` count (a seeded subset; all by default)
``stop_shots_mean``        STOP selectors: mean number of demonstrations chosen before STOP (at most ``shots``)
``stop_shot_frac_n``       STOP selectors: share of queries with n = 0..``shots`` demonstrations chosen
``oracle_acc_adaptive``    STOP selectors, synthetic data: exact accuracy of that adaptive selection
=========================  ==========================================================================

Fixed n-shot selections never pick STOP (its logit is left out of the argmax). The adaptive selection
decodes up to ``shots`` steps and keeps the picks before the first STOP; a query whose first pick is
STOP is shown pool position 0, as the original's inference does. A slot decoder scores every step
from as many slots as there are steps, so its n-shot selection is decoded with n steps (the first n
picks of a longer decode would differ).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from leverjax.core import config as config_lib
from leverjax.core import losses, rollout
from leverjax.core.layers import l2_normalize
from leverjax.core.model import trajectory_log_probs
from leverjax.core.train import Pipeline
from leverjax.data.device import DeviceData, gather
from leverjax.data.synth import oracle_accuracy, realised_accuracy

MAX_ORACLE_SHOTS = 4


def metric_names(shots: int, has_oracle: bool, stop: bool = False, realised: bool = False) -> list[str]:
    names = ["loss", "expected_reward", "top1_reward", "greedy_labelled", "greedy_labelled_reward",
             "changed_vs_ref"]
    if shots >= 2:
        names.append("redundancy")
    if has_oracle:
        names += [f"oracle_acc_{n}" for n in range(1, min(shots, MAX_ORACLE_SHOTS) + 1)]
    if realised:
        names += [f"realised_acc_{n}" for n in range(1, min(shots, MAX_ORACLE_SHOTS) + 1)]
    if stop:
        names += ["stop_shots_mean"] + [f"stop_shot_frac_{n}" for n in range(shots + 1)]
        if has_oracle:
            names.append("oracle_acc_adaptive")
    return names


def _per_query(selector, params, ref_picks, data, raw_rewards, batch, *, num_steps, shots, label_smoothing,
               has_oracle, realised=False):
    """Every metric for one chunk of queries, ``[B]`` each; ``ref_picks [B, num_steps]`` are the
    reference policy's greedy picks. The policy encodes each query once for all of its outputs."""
    prefix = selector.config.prefix_consistent
    oracle_shots = range(1, min(shots, MAX_ORACLE_SHOTS) + 1) if has_oracle else ()
    longest = max(shots, num_steps)
    # A prefix-consistent decoder's first n picks are its n-step picks; a slot decoder decodes each n apart.
    decode_steps = (longest,) if prefix else (longest, num_steps, *oracle_shots)
    step_logp, picks_of, adaptive = selector.score_and_decode(
        params, batch.query_emb, batch.cand_emb, batch.pool_mask, batch.traj, decode_steps,
        adaptive_steps=shots if selector.config.stop else 0)
    n_picks = (lambda n: picks_of[longest][:, :n]) if prefix else (lambda n: picks_of[n])  # noqa: E731
    logp = trajectory_log_probs(step_logp, batch.traj)
    r = raw_rewards[batch.index]
    tm = batch.traj_mask
    ce = losses.cross_entropy(step_logp, batch.traj, selector.logit_mask(batch.pool_mask)[:, None, None, :],
                              label_smoothing).sum(-1)
    out = {"loss": jnp.sum(losses.rce_weights(r, tm, 1.0) * ce, -1)}

    scores = jnp.where(tm, logp, -jnp.inf)
    pi = jax.nn.softmax(jnp.where(tm.any(-1, keepdims=True), scores, 0.0), axis=-1) * tm
    out["expected_reward"] = jnp.sum(pi * r, -1)
    out["top1_reward"] = jnp.take_along_axis(r, jnp.argmax(scores, -1)[:, None], -1)[:, 0]

    first = n_picks(num_steps)
    match = jnp.all(first[:, None, :] == batch.traj, -1) & tm
    labelled = match.any(-1)
    out["greedy_labelled"] = labelled.astype(jnp.float32)
    out["greedy_labelled_reward"] = jnp.sum(jnp.where(match, r, 0.0), -1) / jnp.maximum(match.sum(-1), 1)
    out["changed_vs_ref"] = jnp.any(first != ref_picks, -1).astype(jnp.float32)

    pool_ids = data.pool_ids[batch.index]
    rows = jnp.take_along_axis(pool_ids, picks_of[longest][:, :shots], axis=1)  # global ids [B, shots]
    if shots >= 2:
        e = l2_normalize(data.emb[rows])
        cos = jnp.einsum("bid,bjd->bij", e, e)
        off = 1.0 - jnp.eye(shots)
        out["redundancy"] = jnp.sum(cos * off, (1, 2)) / (shots * (shots - 1))
    qrows = data.query_ids[batch.index]
    for n in oracle_shots:
        shown = jnp.take_along_axis(pool_ids, n_picks(n), axis=1)
        out[f"oracle_acc_{n}"] = oracle_accuracy(data.oracle, qrows, shown)
        if realised:
            out[f"realised_acc_{n}"] = realised_accuracy(data.oracle, qrows, shown)
    if selector.config.stop:
        a_rows, count = rollout.selection_rows(pool_ids, adaptive)  # count: picks before the first STOP
        out["stop_shots_mean"] = count.astype(jnp.float32)
        for n in range(shots + 1):
            out[f"stop_shot_frac_{n}"] = (count == n).astype(jnp.float32)
        if has_oracle:
            out["oracle_acc_adaptive"] = rollout.score_selections(
                "oracle", data.oracle, None, data.emb, qrows, a_rows[:, None], count[:, None], stop=True)[:, 0]
    return out, labelled


def evaluate(selector, params, ref_picks, data, raw_rewards, batches, *, num_steps: int, shots: int,
             label_smoothing, has_oracle: bool, realised: bool = False, questions=None,
             per_question: bool = False):
    """Mean of every metric over the queries of ``batches [chunks, chunk]`` (query rows, −1 = padding;
    ``Pipeline.eval_batches``), with the reference policy's greedy picks ``ref_picks [chunks, chunk,
    num_steps]`` in the same order (``Pipeline.greedy_picks``). ``questions`` (bool per query row, or None:
    all) are the queries the realised accuracy counts. ``per_question``: returns ``(means, scores)``, the
    scores every query's realised score ``{"realised_acc_n": [chunks·chunk]}`` and ``"counted"`` (the queries
    that count), from the same pass."""
    def per_chunk(args):
        idx, ref = args
        batch = gather(data, idx)
        out, labelled = _per_query(selector, params, ref, data, raw_rewards, batch, num_steps=num_steps,
                                   shots=shots, label_smoothing=label_smoothing, has_oracle=has_oracle,
                                   realised=realised)
        valid = batch.query_mask & batch.traj_mask.any(-1)
        counted = valid if questions is None else valid & questions[batch.index]
        return out, labelled, valid, counted

    out, labelled, valid, counted = jax.lax.map(per_chunk, (batches, ref_picks))
    flat = lambda x: x.reshape(-1)  # noqa: E731
    valid, labelled, counted = flat(valid), flat(labelled), flat(counted)
    metrics = {}
    for name, values in out.items():
        mask = (valid & labelled) if name == "greedy_labelled_reward" else counted if name.startswith(
            "realised_") else valid
        count = mask.sum()
        mean = jnp.sum(jnp.where(mask, flat(values), 0.0)) / jnp.maximum(count, 1)
        metrics[name] = jnp.where(count > 0, mean, jnp.nan)
    if per_question:
        return metrics, {**{k: flat(v) for k, v in out.items() if k.startswith("realised_")}, "counted": counted}
    return metrics


def selections(selector, params, data, batches, *, num_steps: int, shots) -> dict[int, jax.Array]:
    """The selections the evaluation scores, ``{n: global rows [chunks·chunk, n]}`` for every ``n`` in
    ``shots``, in ``batches`` order (rows of padding entries are meaningless): the same decoding as
    :func:`evaluate`'s, so that a scorer given them sees what the oracle accuracy saw."""
    shots = tuple(shots)
    prefix = selector.config.prefix_consistent
    longest = max(max(shots), num_steps)
    decode_steps = (longest,) if prefix else (longest, *shots)

    def per_chunk(idx):
        batch = gather(data, idx)
        _, picks_of, _ = selector.score_and_decode(params, batch.query_emb, batch.cand_emb, batch.pool_mask,
                                                   batch.traj, decode_steps)
        pool_ids = data.pool_ids[batch.index]
        return {n: jnp.take_along_axis(pool_ids, picks_of[longest][:, :n] if prefix else picks_of[n], axis=1)
                for n in shots}

    out = jax.lax.map(per_chunk, batches)
    return {n: v.reshape(-1, n) for n, v in out.items()}


class Evaluator:
    """The evaluation of one :class:`~leverjax.core.train.Pipeline`'s runs: validation after every epoch (with
    best-epoch tracking in the state) and the final test metrics, as pure functions like the pipeline's."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    def validate_epoch(self, state: dict, epoch, data: DeviceData, hp) -> tuple[dict, dict]:
        """Evaluates on val (``val_*`` metrics; the reference policy's picks are the state's
        ``ref_val_picks``) and keeps the parameters if they are the phase's best."""
        cfg = self.pipe.cfg
        metrics = {f"val_{k}": v for k, v in self.evaluate(state["params"], state["ref_val_picks"], data, hp,
                                                            "val").items()}
        value = metrics.get(self.best_metric_key, jnp.float32(jnp.nan))
        score = value if config_lib.best_mode(cfg) == "min" else -value
        better = (score < state["best_value"]) & jnp.isfinite(score)
        state = {**state,
                 "best_value": jnp.where(better, score, state["best_value"]),
                 "best_epoch": jnp.where(better, epoch, state["best_epoch"]),
                 "best_params": jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old),
                                                       state["params"], state["best_params"])}
        return state, metrics

    @property
    def best_metric_key(self) -> str:
        key = self.pipe.cfg.best_metric
        return key if key.startswith(("val_", "train_")) else f"val_{key}"

    def metric_names(self, phase_index: int) -> list[str]:
        kind = self.pipe.phases[phase_index].kind
        return [f"train_{k}" for k in self.pipe.train_metric_names(kind)] + [f"val_{k}" for k in self.eval_metric_names()]

    def eval_metric_names(self) -> list[str]:
        return metric_names(self.pipe.cfg.eval_shots, self.pipe.has_oracle, self.pipe.selector.config.stop,
                            self.pipe.has_realised)

    def evaluate(self, params, reference, data: DeviceData, hp, split: str, per_question: bool = False):
        """Offline metrics of ``params`` on ``split`` (eval mode), see :mod:`leverjax.core.evaluate`.

        ``reference`` is the reference policy, as its parameters or as its greedy picks on ``split``
        (``Pipeline.greedy_picks``; the state keeps them for val as ``ref_val_picks``). ``per_question``:
        ``(metrics, every query's realised scores)`` (:func:`evaluate`).
        """
        pipe = self.pipe
        if len(pipe.split_index[split]) == 0:
            nan = {k: jnp.float32(jnp.nan) for k in self.eval_metric_names()}
            return (nan, {}) if per_question else nan
        if not isinstance(reference, jax.Array):  # parameters
            reference = pipe.greedy_picks(reference, data, split)
        raw, _ = pipe.rewards(data, hp)
        questions = jnp.asarray(pipe.test_questions) if split == "test" else None
        return evaluate(pipe.selector, params, reference, data, raw, pipe.eval_batches(split),
                        num_steps=pipe.num_steps, shots=pipe.cfg.eval_shots, label_smoothing=hp["label_smoothing"],
                        has_oracle=pipe.has_oracle, realised=pipe.has_realised, questions=questions,
                        per_question=per_question)

    @property
    def final_split(self) -> str | None:
        """The split of the final evaluation: test, else val when the data has no test queries (data
        imported from the reference has train and val only), else ``None`` (nothing to evaluate)."""
        for name in ("test", "val"):
            if len(self.pipe.split_index[name]):
                return name
        return None

    def final_evaluation(self, state: dict, data: DeviceData, hp) -> dict:
        """Metrics of the final and the best parameters on :attr:`final_split` (``test_*``,
        ``best_test_*``: the names stay those of the test split whichever split they come from)."""
        return self.final_evaluation_and_questions(state, data, hp)[0]

    def final_evaluation_and_questions(self, state: dict, data: DeviceData, hp) -> tuple[dict, dict]:
        """:meth:`final_evaluation`, and every query's realised score of the final parameters from the same
        pass, in :meth:`question_rows` order (``realised_acc_n`` [Q]; ``counted``: the queries the means count),
        for the power analysis (:mod:`leverjax.report.power`)."""
        split = self.final_split or "test"
        ref_picks = self.pipe.greedy_picks(state["ref_params"], data, split)  # once for both
        final, questions = self.evaluate(state["params"], ref_picks, data, hp, split, per_question=True)
        best = self.evaluate(state["best_params"], ref_picks, data, hp, split)
        return ({**{f"test_{k}": v for k, v in final.items()}, **{f"best_test_{k}": v for k, v in best.items()}},
                questions)

    def question_rows(self) -> list[int]:
        """The query rows of the per-question scores' entries (−1: padding)."""
        import numpy as np

        return np.asarray(self.pipe.eval_batches(self.final_split or "test")).reshape(-1).tolist()
