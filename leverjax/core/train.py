"""The training pipeline as pure functions: SFT → RCE → GRPO, each phase a ``lax.scan`` over minibatches.

:class:`Pipeline` derives everything static from a :class:`~leverjax.core.config.Config` and a
:class:`~leverjax.data.Dataset` (shapes, phases, split indices) and exposes pure functions of
``(state, data, hp)``, where ``hp`` holds the sweepable hyperparameters as traced scalars and ``data``
the device-resident arrays (shared by all runs, never vmapped):

* :meth:`Pipeline.init_state` — fresh parameters from a seed;
* :meth:`Pipeline.begin_phase` — a fresh optimizer, the reference policy (its log-probs and validation
  picks) as the config says;
* :meth:`Pipeline.train_epoch` — one shuffled epoch of one phase.

Evaluation (:mod:`leverjax.core.evaluate`) and the whole run as one program (:mod:`leverjax.core.program`) build
on these.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from leverjax.core import advantages as adv_lib
from leverjax.core import losses, optim
from leverjax.core import reward_model as rm_lib
from leverjax.core import rewards as rewards_lib
from leverjax.core import rollout, sampling
from leverjax.core.config import Config, hyperparameters, selector_config, validate
from leverjax.core.model import Selector, init_params, trajectory_log_probs
from leverjax.data.device import Batch, DeviceData, gather, padded_batches
from leverjax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training phase: its kind, epoch count, batch size and the (static) training queries."""

    name: str  # sft | rce | grpo_positive | grpo
    kind: str  # sft | rce | grpo
    epochs: int
    batch_size: int
    query_index: np.ndarray = dataclasses.field(repr=False, compare=False)
    updates_per_step: int = 1  # optimizer updates per batch of queries (on-policy GRPO's μ)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.query_index) / self.batch_size))

    @property
    def total_steps(self) -> int:
        """Optimizer updates in the phase."""
        return self.steps_per_epoch * self.epochs * self.updates_per_step


TRAIN_METRICS = {
    "sft": ("loss", "grad_norm", "lr"),
    "rce": ("loss", "tau", "grad_norm", "lr"),
    "grpo": ("loss", "ppo_loss", "kl", "beta", "adv_mean", "adv_std", "adv_max_abs", "zero_var_frac",
             "clip_frac", "mean_ratio", "grad_norm", "lr"),
}
# On-policy GRPO (leverjax/core/rollout.py) logs TRL's names where one exists: reward, reward_std,
# frac_reward_zero_std, clip_ratio, entropy; scorer_calls counts every scored selection so far.
ON_POLICY_METRICS = ("loss", "ppo_loss", "kl", "beta", "reward", "reward_std", "frac_reward_zero_std", "clip_ratio",
                     "mean_ratio", "entropy", "grad_norm", "lr", "scorer_calls")


class Pipeline:
    """Static structure of one run configuration over one dataset (see the module docstring)."""

    def __init__(self, cfg: Config, dataset):
        self.cfg = validate(cfg)
        self.dataset = dataset
        self.selector = Selector(selector_config(cfg, int(dataset.traj.shape[-1])))
        split = np.asarray(dataset.split)
        has_traj = np.asarray(dataset.traj[..., 0] >= 0).any(-1)
        self.split_index = {name: np.flatnonzero((split == code) & has_traj).astype(np.int32)
                            for name, code in (("train", 0), ("val", 1), ("test", 2))}
        if len(self.split_index["train"]) == 0:
            raise DataError("the train split has no query with a labelled trajectory")
        self.num_steps = int(dataset.traj.shape[-1])
        self.max_traj = int(dataset.traj.shape[1])
        self.has_oracle = bool(dataset.oracle)
        self.has_realised = self.has_oracle and "answer_seed" in dataset.oracle
        self.test_questions = self._test_questions(split.shape[0])
        self.on_policy = self.cfg.grpo_mode == "on_policy"
        self.reward_model = self._reward_model() if self.on_policy else None
        self.phases = self._phases()

    def _reward_model(self):
        """Checks that the data has what ``rollout_scorer`` needs; fits and returns the reward model when it
        is the scorer (else None)."""
        scorer = self.cfg.rollout_scorer
        if scorer == "oracle" and not self.has_oracle:
            raise DataError("rollout_scorer=oracle needs the simulator's ground truth (oracle_* arrays) and this "
                            "data has none; on real data use rollout_scorer=reward_model")
        if scorer == "oracle_realised" and not self.has_realised:
            raise DataError("rollout_scorer=oracle_realised needs a synthetic data set with an answer seed "
                            "(generator version 4 on); this data has none")
        if scorer != "reward_model":
            return None
        q, d, target, _ = self._reward_examples("train")
        return rm_lib.fit(q, d, target)

    def _reward_examples(self, split: str):
        ds = self.dataset
        return rm_lib.examples(ds.emb, ds.query_ids, np.maximum(ds.pool_ids, 0), ds.traj, ds.acc,
                               self.split_index[split])

    def reward_model_calibration(self) -> dict | None:
        """The reward model's calibration on the val split's labelled trajectories (held out from its fit)."""
        if self.reward_model is None:
            return None
        return rm_lib.calibration(self.reward_model, *self._reward_examples("val"))

    def train_metric_names(self, kind: str) -> tuple[str, ...]:
        """The ``train_*`` metrics (without the prefix) of a phase of ``kind``."""
        if kind == "grpo" and self.on_policy:
            drift = ("oracle_reward",) if self.cfg.rollout_scorer == "reward_model" and self.has_oracle else ()
            return ON_POLICY_METRICS + drift
        return TRAIN_METRICS[kind]

    def _test_questions(self, num_queries: int) -> np.ndarray:
        """Which query rows the realised accuracy counts on the test split: all, or a seeded subset of
        ``test_questions`` of them (``test_questions_seed``)."""
        test, n = self.split_index["test"], self.cfg.test_questions
        mask = np.zeros(num_queries, bool)
        if n > len(test):
            raise ConfigError(f"test_questions={n} exceeds the {len(test)} test questions (with a labelled "
                              f"trajectory) of the data")
        mask[test if n == 0 else np.random.default_rng(self.cfg.test_questions_seed).choice(test, n, replace=False)] = True
        return mask

    def _phases(self) -> list[Phase]:
        cfg, train = self.cfg, self.split_index["train"]
        updates = cfg.inner_epochs if self.on_policy else 1
        phases = []
        if cfg.sft_epochs:
            phases.append(Phase("sft", "sft", cfg.sft_epochs, cfg.sft_batch_size, train))
        if cfg.rce_epochs:
            phases.append(Phase("rce", "rce", cfg.rce_epochs, cfg.rce_batch_size, train))
        if cfg.grpo_positive_only_epochs:
            positive = np.asarray((self.dataset.correct > 0) & (self.dataset.traj[..., 0] >= 0)).any(-1)
            pos_train = train[positive[train]]
            if len(pos_train) == 0:
                raise DataError("grpo_positive_only_epochs > 0 but no train query has a correct trajectory")
            phases.append(Phase("grpo_positive", "grpo", cfg.grpo_positive_only_epochs, cfg.grpo_batch_size,
                                pos_train, updates))
        if cfg.grpo_epochs:
            phases.append(Phase("grpo", "grpo", cfg.grpo_epochs, cfg.grpo_batch_size, train, updates))
        return phases

    # -- hyperparameters and rewards -------------------------------------------------------------
    def hyperparameters(self, cfg: Config | None = None) -> dict:
        return {k: jnp.float32(v) for k, v in hyperparameters(cfg or self.cfg).items()}

    def rewards(self, data: DeviceData, hp) -> tuple[jax.Array, jax.Array]:
        """Raw (clipped) rewards and their per-query normalisation, ``[Q, M]`` each."""
        raw = rewards_lib.raw_rewards(data.correct, data.acc, data.gt_prob, data.rel, mode=self.cfg.reward_mode,
                                      w_hard=hp["w_hard"], w_soft=hp["w_soft"], w_rel=hp["w_rel"])
        raw = jnp.where(data.traj_mask, raw, 0.0)
        norm = rewards_lib.normalize_rewards(raw, data.traj_mask, method=self.cfg.reward_normalization)
        return raw, norm

    # -- state -----------------------------------------------------------------------------------
    def init_state(self, data: DeviceData, hp, rng) -> dict:
        """Fresh parameters; the reference policy starts as the initial one. Its log-probs are left at
        zero: only GRPO steps read them, and :meth:`begin_phase` sets the reference (log-probs included)
        before the first GRPO phase whatever ``reference_policy`` says, so computing them here (every
        query, every run) would be thrown away."""
        rng, init_rng = jax.random.split(rng)
        params = init_params(self.selector.config, init_rng, data.emb.shape[-1], num_steps=self.num_steps)
        return {
            "params": params,
            "rng": rng,
            **self.reference(params, data, log_probs=False),
            "beta": hp["kl_beta"],
            "step": jnp.zeros((), jnp.int32),
            "opt_state": (),
            "best_params": params,
            "best_value": jnp.float32(jnp.inf),
            "best_epoch": jnp.int32(-1),
            **({"scorer_calls": jnp.zeros((), jnp.int32)} if self.on_policy else {}),
        }

    def frozen_modules(self, kind: str) -> tuple[str, ...]:
        """Top-level modules that a phase of ``kind`` does not train (the GRPO frozen backbone)."""
        return optim.BACKBONE if (kind == "grpo" and self.cfg.freeze_backbone) else ()

    def optimizer(self, phase_index: int, hp, params):
        cfg, phase = self.cfg, self.phases[phase_index]
        kind = phase.kind
        frozen = self.frozen_modules(kind)
        return optim.make_optimizer(
            hp[f"{kind}_lr"], hp[f"{kind}_weight_decay"], total_steps=phase.total_steps,
            schedule=getattr(cfg, f"{kind}_schedule"), warmup_ratio=getattr(cfg, f"{kind}_warmup_ratio"),
            clip_norm=cfg.clip_norm, b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps, frozen=frozen, params=params)

    def begin_phase(self, phase_index: int, state: dict, data: DeviceData, hp) -> dict:
        """Starts phase ``phase_index``: a fresh optimizer, step 0, best-epoch tracking reset, and the
        reference policy frozen where the config says (after SFT, or at the first GRPO phase)."""
        cfg, phase = self.cfg, self.phases[phase_index]
        state = dict(state)
        previous = self.phases[phase_index - 1].kind if phase_index else None
        set_ref = (cfg.reference_policy == "sft" and phase.kind != "sft" and previous in (None, "sft")) or (
            cfg.reference_policy in ("post_rce", "refresh_each_epoch") and phase.kind == "grpo"
            and previous != "grpo")
        if set_ref:
            state.update(self.reference(state["params"], data, phase if phase.kind == "grpo" else None))
        state["opt_state"] = self.optimizer(phase_index, hp, state["params"]).init(state["params"])
        state["step"] = jnp.zeros((), jnp.int32)
        state["best_value"] = jnp.float32(jnp.inf)
        state["best_epoch"] = jnp.int32(-1)
        if phase.kind == "grpo" and phase_index and previous != "grpo":
            state["beta"] = hp["kl_beta"]
        return state

    # -- the reference policy and scoring ---------------------------------------------------------
    def reference(self, params, data: DeviceData, phase: Phase | None = None, log_probs: bool = True) -> dict:
        """The state entries that make ``params`` the reference policy: the parameters, their sequence
        log-probs (for the KL and the PPO ratio; see :meth:`sequence_log_probs` for ``phase``; zeros with
        ``log_probs=False``) and their greedy picks on the val split (``changed_vs_ref`` after every epoch
        compares with them: they are computed once whenever the reference is set, not at every
        validation)."""
        logp = self.sequence_log_probs(params, data, phase) if log_probs else \
            jnp.zeros((data.query_ids.shape[0], self.max_traj), jnp.float32)
        return {"ref_params": params, "ref_logp": logp, "ref_val_picks": self.greedy_picks(params, data, "val")}

    def eval_batches(self, split: str) -> jax.Array:
        """The query rows of ``split`` in evaluation chunks ``[chunks, chunk]`` (−1 = padding; one chunk of
        padding when the split is empty)."""
        index = jnp.asarray(self.split_index[split])
        return padded_batches(index, max(1, min(self.cfg.eval_chunk, index.shape[0])))

    def greedy_picks(self, params, data: DeviceData, split: str) -> jax.Array:
        """Eval-mode greedy ``num_steps``-step picks (pool positions, never STOP) of every query of ``split``,
        ``[chunks, chunk, num_steps]`` in :meth:`eval_batches` order."""
        def chunk(idx):
            b = gather(data, idx)
            return self.selector.greedy(params, b.query_emb, b.cand_emb, b.pool_mask, self.num_steps,
                                        allow_stop=False)
        return jax.lax.map(chunk, self.eval_batches(split))

    def sequence_log_probs(self, params, data: DeviceData, phase: Phase | None = None) -> jax.Array:
        """Eval-mode sequence log-probs ``[Q, M]`` of every labelled trajectory (0 where padded).

        Given the GRPO ``phase`` that will read them, they are computed exactly as its steps compute
        ℓ_new (same batch shape, projected table when its backbone is frozen), so that equal
        parameters give a ratio of exactly 1, not 1 up to float rounding.
        """
        projected = phase is not None and self._projected(phase.kind)
        size = phase.batch_size if phase is not None else self.cfg.eval_chunk
        index = padded_batches(jnp.arange(data.query_ids.shape[0], dtype=jnp.int32), size)
        table = self.projected_table(params, data) if projected else None

        def score_chunk(idx):
            b = gather(data, idx, table)
            return self.selector.log_probs(params, b.query_emb, b.cand_emb, b.pool_mask, b.traj,
                                           projected=projected)

        out = jax.lax.map(score_chunk, index).reshape(-1, self.max_traj)
        return out[: data.query_ids.shape[0]]

    # -- one optimizer step per phase kind -------------------------------------------------------
    def _sft_targets(self, data: DeviceData, raw_rewards) -> jax.Array:
        """Pool-position labels ``[Q, S]``: each query's best (or first) labelled trajectory."""
        if self.cfg.sft_target == "first":
            pick = jnp.zeros(raw_rewards.shape[0], jnp.int32)
        else:
            pick = jnp.argmax(jnp.where(data.traj_mask, raw_rewards, -jnp.inf), axis=-1)
        return jnp.take_along_axis(data.traj, pick[:, None, None], axis=1)[:, 0]

    def _loss_fn(self, kind: str, batch: Batch, state: dict, hp, ctx: dict, epoch) -> Callable:
        cfg, sel = self.cfg, self.selector
        i = batch.index
        if kind == "sft":
            labels = ctx["sft_targets"][i]

            def loss_fn(params, rng):
                step_logp = sel.step_log_probs(params, batch.query_emb, batch.cand_emb, batch.pool_mask,
                                               labels[:, None, :], rng=rng, deterministic=False)[:, 0]
                loss = losses.sft_loss(step_logp, labels, sel.logit_mask(batch.pool_mask),
                                       batch.query_mask & batch.traj_mask.any(-1), hp["sft_label_smoothing"])
                return loss, {}
            return loss_fn

        if kind == "rce":
            rewards = ctx["rce_rewards"][i]
            traj, traj_mask = batch.traj, batch.traj_mask
            if cfg.rce_top1_only:
                traj, traj_mask, rewards = traj[:, :1], traj_mask[:, :1], rewards[:, :1]
            tau = losses.rce_temperature(state["step"], self.phases[ctx["phase_index"]].total_steps,
                                         hp["rce_tau_start"], hp["rce_tau_end"])

            def loss_fn(params, rng):
                step_logp = sel.step_log_probs(params, batch.query_emb, batch.cand_emb, batch.pool_mask, traj,
                                               rng=rng, deterministic=False, per_trajectory=cfg.dropout_per_trajectory)
                loss = losses.rce_loss(step_logp, traj, traj_mask, sel.logit_mask(batch.pool_mask), rewards, tau,
                                       batch.query_mask, hp["label_smoothing"])
                return loss, {"tau": tau}
            return loss_fn

        rewards = ctx["grpo_rewards"][i]
        mask = batch.traj_mask
        if cfg.grpo_top_k:
            mask = mask & ctx["grpo_keep"][i]
        advantages = adv_lib.group_advantages(rewards, mask, method=cfg.advantage, min_std=hp["adv_min_std"],
                                              clip=hp["adv_clip"])
        logp_ref = state["ref_logp"][i]
        # Clip-only mode drops the KL term; the reference drops it whatever β says (defect 5.6).
        kl_coef = 0.0 if (cfg.clip_only and cfg.clip_only_ignores_beta) else state["beta"]
        stats = _advantage_stats(advantages, rewards, mask)

        def loss_fn(params, rng):
            logp = sel.log_probs(params, batch.query_emb, batch.cand_emb, batch.pool_mask, batch.traj, rng=rng,
                                 deterministic=not cfg.ratio_dropout, projected=self._projected(phase_kind=kind),
                                 per_trajectory=cfg.dropout_per_trajectory)
            terms = losses.grpo_loss(logp, logp_ref, advantages, mask, clip_eps=hp["clip_eps"],
                                     clip_eps_high=hp["clip_eps_high"], kl_coef=kl_coef,
                                     kl_estimator=cfg.kl_estimator, query_mask=batch.query_mask)
            return terms.loss, {"ppo_loss": terms.ppo, "kl": terms.kl, "clip_frac": terms.clip_fraction,
                                "mean_ratio": terms.mean_ratio, **stats}
        return loss_fn

    def _projected(self, phase_kind: str) -> bool:
        """Whether the phase feeds the model input-projected embeddings (its input_proj is frozen)."""
        return "input_proj" in self.frozen_modules(phase_kind)

    @staticmethod
    def projected_table(params, data: DeviceData) -> jax.Array:
        """``emb @ input_proj``: the whole table through the (frozen) input projection, ``[N, H]``."""
        return data.emb @ params["input_proj"]["kernel"]

    def _step(self, phase_index: int, hp, data: DeviceData, ctx: dict, epoch, state: dict, index):
        phase = self.phases[phase_index]
        batch = gather(data, index, ctx.get("table"))
        rng, drop_rng = jax.random.split(state["rng"])
        loss_fn = self._loss_fn(phase.kind, batch, state, hp, ctx, epoch)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], drop_rng)
        # ceil(n / B) batches of a non-empty index: every batch holds at least one real query.
        return self._update(phase_index, hp, {**state, "rng": rng}, grads, loss, aux)

    def _update(self, phase_index: int, hp, state: dict, grads, loss, aux):
        """One optimizer update of ``state`` with ``grads``, β adapted after a GRPO update: the new state and
        the update's metrics."""
        cfg, phase = self.cfg, self.phases[phase_index]
        tx = self.optimizer(phase_index, hp, state["params"])
        grad_norm = optim.global_norm(grads, optim.trainable_mask(grads, self.frozen_modules(phase.kind)))
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = jax.tree_util.tree_map(lambda p, u: p + u, state["params"], updates)
        lr = optim.learning_rate_at(hp[f"{phase.kind}_lr"], state["step"], total_steps=phase.total_steps,
                                    schedule=getattr(cfg, f"{phase.kind}_schedule"),
                                    warmup_ratio=getattr(cfg, f"{phase.kind}_warmup_ratio"))
        beta = state["beta"]
        if phase.kind == "grpo" and cfg.adaptive_beta:
            beta = losses.adapt_beta(beta, aux["kl"], kl_high=cfg.beta_kl_high, kl_low=cfg.beta_kl_low,
                                     factor=cfg.beta_factor, beta_min=cfg.beta_min, beta_max=cfg.beta_max)
        new_state = {**state, "params": params, "opt_state": opt_state, "beta": beta, "step": state["step"] + 1}
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, **aux}
        if phase.kind == "grpo":
            metrics["beta"] = beta
        return new_state, metrics

    # -- on-policy GRPO (leverjax/core/rollout.py) -------------------------------------------------
    def _score(self, data: DeviceData, query_rows, rows, counts, scorer: str | None = None):
        return rollout.score_selections(scorer or self.cfg.rollout_scorer, data.oracle, self.reward_model,
                                        data.emb, query_rows, rows, counts, stop=bool(self.selector.config.stop))

    def rollout(self, params, batch: Batch, data: DeviceData, hp, rng) -> dict:
        """Samples, scores and the advantages of one on-policy step (see :mod:`leverjax.core.rollout`):
        ``picks [B, M, S]``, ``scores [B, M]``, ``mask [B, M]`` (groups kept), ``advantages [B, M]``, ``calls``
        (scorer calls), the step's reward statistics and, with the reward model on synthetic data, the exact
        oracle accuracy of the same samples (``oracle_reward``, not a scorer call)."""
        cfg, sel = self.cfg, self.selector
        m, s, stop = cfg.rollouts, self.num_steps, bool(sel.config.stop)
        qrows, pools, valid = data.query_ids[batch.index], data.pool_ids[batch.index], batch.query_mask

        def draw(key):
            picks, _ = sampling.sample(sel, params, batch.query_emb, batch.cand_emb, batch.pool_mask, s, m, key,
                                       temperature=hp["rollout_temperature"], allow_stop=stop)
            rows, counts = rollout.selection_rows(pools, picks)
            return picks, rows, counts, self._score(data, qrows, rows, counts)

        rng, key = jax.random.split(rng)
        drawn = draw(key)
        calls = jnp.sum(valid) * m
        if cfg.dynamic_sampling:
            def again(carry):
                i, key, drawn, calls = carry
                key, sub = jax.random.split(key)
                flat = rollout.flat_groups(drawn[3]) & valid
                new = draw(sub)
                drawn = tuple(jnp.where(flat.reshape((-1,) + (1,) * (a.ndim - 1)), b, a) for a, b in zip(drawn, new))
                return i + 1, key, drawn, calls + jnp.sum(flat) * m

            def more(carry):
                i, _, drawn, _ = carry
                return (i < cfg.dynamic_sampling) & jnp.any(rollout.flat_groups(drawn[3]) & valid)

            _, _, drawn, calls = jax.lax.while_loop(more, again, (0, rng, drawn, calls))
        picks, rows, counts, scores = drawn
        keep = valid & ~rollout.flat_groups(scores) if cfg.dynamic_sampling else valid
        mask = jnp.broadcast_to(keep[:, None], scores.shape)
        out = {"picks": picks, "scores": scores, "mask": mask,
               **rollout.group_stats(scores, jnp.broadcast_to(valid[:, None], scores.shape))}
        if cfg.advantage == "remax":
            greedy = sel.greedy(params, batch.query_emb, batch.cand_emb, batch.pool_mask, s, allow_stop=stop)
            g_rows, g_counts = rollout.selection_rows(pools, greedy[:, None, :])
            baseline = self._score(data, qrows, g_rows, g_counts)[:, 0]
            out["advantages"] = rollout.remax_advantages(scores, baseline, mask, hp["adv_clip"])
            calls = calls + jnp.sum(valid)
        else:
            out["advantages"] = adv_lib.group_advantages(scores, mask, method=cfg.advantage,
                                                         min_std=hp["adv_min_std"], clip=hp["adv_clip"])
        if cfg.rollout_scorer == "reward_model" and self.has_oracle:
            exact = self._score(data, qrows, rows, counts, scorer="oracle")
            out["oracle_reward"] = rollout.group_stats(exact, jnp.broadcast_to(valid[:, None], scores.shape))["reward"]
        # a reward model's score costs no VLM generation: only the oracle scorers (a VLM's stand-ins) count
        out["calls"] = jnp.int32(0) if cfg.rollout_scorer == "reward_model" else calls.astype(jnp.int32)
        return out

    def on_policy_step(self, phase_index: int, hp, data: DeviceData, ctx: dict, epoch, state: dict, index):
        """One on-policy GRPO step: a rollout from the current policy, then ``inner_epochs`` updates on it."""
        cfg, sel = self.cfg, self.selector
        batch = gather(data, index)
        rng, roll_rng = jax.random.split(state["rng"])
        roll = self.rollout(state["params"], batch, data, hp, roll_rng)
        picks, mask, adv = roll["picks"], roll["mask"], roll["advantages"]
        ref_logp = sel.log_probs(state["ref_params"], batch.query_emb, batch.cand_emb, batch.pool_mask, picks)
        kl_coef = 0.0 if (cfg.clip_only and cfg.clip_only_ignores_beta) else None
        state = {**state, "rng": rng, "scorer_calls": state["scorer_calls"] + roll["calls"]}
        old, steps = None, []
        for _ in range(cfg.inner_epochs):
            def loss_fn(params, old=old, beta=state["beta"]):
                step_logp = sel.step_log_probs(params, batch.query_emb, batch.cand_emb, batch.pool_mask, picks)
                logp = trajectory_log_probs(step_logp, picks)
                logp_old = jax.lax.stop_gradient(logp) if old is None else old  # π_old: the sampling policy
                terms = losses.grpo_loss(logp, ref_logp, adv, mask, clip_eps=hp["clip_eps"],
                                         clip_eps_high=hp["clip_eps_high"],
                                         kl_coef=beta if kl_coef is None else kl_coef,
                                         kl_estimator=cfg.kl_estimator, query_mask=batch.query_mask,
                                         logp_old=logp_old, dual_clip=hp["dual_clip"])
                entropy = losses.masked_mean(losses.step_entropy(step_logp).mean(-1), mask)
                return terms.loss - hp["entropy_coef"] * entropy, (
                    {"ppo_loss": terms.ppo, "kl": terms.kl, "clip_ratio": terms.clip_fraction,
                     "mean_ratio": terms.mean_ratio, "entropy": entropy}, logp_old)

            (loss, (aux, old)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
            state, metrics = self._update(phase_index, hp, state, grads, loss, aux)
            steps.append(metrics)
        metrics = {k: jnp.mean(jnp.stack([m[k] for m in steps])) for k in steps[0] if k != "beta"}
        metrics["beta"] = state["beta"]
        metrics.update({k: roll[k] for k in ("reward", "reward_std", "frac_reward_zero_std", "oracle_reward")
                        if k in roll})
        return state, metrics

    def train_epoch(self, phase_index: int, state: dict, epoch, data: DeviceData, hp) -> tuple[dict, dict]:
        """One shuffled epoch of phase ``phase_index`` (``epoch`` counts from 0 within the phase).

        Returns the new state and the epoch's training metrics (``train_*``, means over its steps).
        """
        phase = self.phases[phase_index]
        state, metrics = self.train_steps(phase_index, state, epoch, data, hp)
        train = {f"train_{k}": jnp.mean(v) for k, v in metrics.items() if k != "beta"}
        if phase.kind == "grpo":
            train["train_beta"] = state["beta"]
        if "scorer_calls" in state:
            train["train_scorer_calls"] = state["scorer_calls"].astype(jnp.float32)
        return state, train

    def train_steps(self, phase_index: int, state: dict, epoch, data: DeviceData, hp, order=None):
        """The optimizer steps of one epoch: the new state and every step's metrics (``[steps]`` each).

        The epoch visits the phase's training queries in a random order drawn from the state's rng, or
        in ``order`` (query rows, a permutation of the phase's queries) when it is given: the same rng
        is consumed either way, so only the order differs.
        """
        state, ctx, batches = self.epoch_setup(phase_index, state, epoch, data, hp, order)
        on_policy = self.on_policy and self.phases[phase_index].kind == "grpo"
        step = functools.partial(self.on_policy_step if on_policy else self._step, phase_index, hp, data, ctx, epoch)
        return jax.lax.scan(step, state, batches)

    def epoch_setup(self, phase_index: int, state: dict, epoch, data: DeviceData, hp, order=None):
        """The per-epoch work before the steps of :meth:`train_steps`: the state (its rng advanced), the
        steps' shared context (rewards, SFT targets, projected table, top-k sets) and the batches
        ``[steps, B]`` of query rows (−1 = padding)."""
        cfg, phase = self.cfg, self.phases[phase_index]
        raw, norm = self.rewards(data, hp)
        ctx = {"phase_index": phase_index,
               "sft_targets": self._sft_targets(data, raw),
               "rce_rewards": raw if cfg.rce_rewards == "raw" else norm,
               "grpo_rewards": norm}
        offline = not (self.on_policy and phase.kind == "grpo")
        if offline and self._projected(phase.kind):
            # input_proj is frozen in this phase: project the table once instead of every pool per step.
            ctx["table"] = self.projected_table(state["params"], data)
        if phase.kind == "grpo" and cfg.reference_policy == "refresh_each_epoch":
            state = {**state, **self.reference(state["params"], data, phase)}
        if offline and phase.kind == "grpo" and cfg.grpo_top_k:
            # Each query is visited once per epoch: its top-k set for the epoch is computed up front.
            k = jnp.where(epoch == 0, cfg.top_k_first, cfg.top_k_after)
            tie_rng = None
            if cfg.top_k_ties == "random":
                rng, tie_rng = jax.random.split(state["rng"])
                state = {**state, "rng": rng}
            ctx["grpo_keep"] = adv_lib.top_k_mask(norm, data.traj_mask, k, ties=cfg.top_k_ties, rng=tie_rng)
        rng, perm_rng = jax.random.split(state["rng"])
        state = {**state, "rng": rng}
        if order is None:
            order = jax.random.permutation(perm_rng, jnp.asarray(phase.query_index))
        batches = padded_batches(jnp.asarray(order, jnp.int32), phase.batch_size)
        return state, ctx, batches


def _advantage_stats(advantages, rewards, mask) -> dict:
    """Advantage signals of one optimizer step, over the batch's kept trajectories (all queries pooled).

    As the reference prints them: ``adv_mean`` and ``adv_std`` are the mean and the *unbiased* standard
    deviation (divisor n − 1) of the advantages of every kept trajectory of the batch (at one query per
    step: of that query's kept trajectories; 0 when fewer than two are kept, where the reference gives
    NaN), ``adv_max_abs`` their largest magnitude. ``zero_var_frac`` is the share of the batch's groups
    whose kept rewards are all equal. The epoch's value of each is the mean over its steps.
    """
    m = mask.astype(jnp.float32)
    count = m.sum()
    n = jnp.maximum(count, 1.0)
    mean = jnp.sum(advantages * m) / n
    var = jnp.sum(((advantages - mean) ** 2) * m) / jnp.maximum(count - 1.0, 1.0)
    std = jnp.where(count > 1, jnp.sqrt(var), 0.0)
    groups = mask.any(-1)
    group_count = jnp.maximum(mask.sum(-1), 1)
    group_mean = jnp.sum(rewards * m, -1) / group_count
    group_var = jnp.sum(((rewards - group_mean[:, None]) ** 2) * m, -1) / group_count
    zero_var = (group_var <= 1e-12) & groups
    return {"adv_mean": mean, "adv_std": std, "adv_max_abs": jnp.max(jnp.abs(advantages) * m),
            "zero_var_frac": zero_var.sum() / jnp.maximum(groups.sum(), 1)}
