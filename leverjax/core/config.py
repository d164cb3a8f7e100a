"""The run configuration: every knob of the reference pipeline in one dataclass that describes itself.

Each field declares, on the field itself (:func:`_Section.__call__`), what it is:

* its **help** text and **section** (data, selector, sft, rce, grpo, optimizer, evaluation, run);
* its **choices** (enum fields) and its valid **range**;
* its **kind**: ``sweep`` — a traced scalar of the compiled program, so runs that differ only in it (and in
  the seed) share one compile and are vmapped together; ``static`` — a shape, count, method or switch,
  changing it means a new compile; ``run`` — changes neither the program nor the result of one run;
* the first phase it **acts from** (``sft``, ``rce`` or ``grpo``): the phase whose training or validation
  it can change first. The fields acting from SFT or RCE make up the **prefix** (the state before the
  first GRPO phase); those acting from RCE cannot change the state after SFT, those of the GRPO section
  neither: that is what lets runs share a cached SFT or SFT/RCE prefix.

Flags, ``--help``, validation, sweep grouping (:func:`static_signature`), the prefix-cache key
(:func:`prefix_fields`) and run names are all derived from these declarations: adding a field is one line.
Defaults are the reference values; where the reference had a defect (docs/reference.md §5) the default
reproduces it and a field offers the fix.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from leverjax.core import model as model_lib
from leverjax.data.candidates import COMBINE_MODES, ORIGINAL_MIX, parse_mix
from leverjax.data.curate import parse_spec
from leverjax.errors import ConfigError

SECTIONS = ("data", "selector", "sft", "rce", "grpo", "optimizer", "evaluation", "run")
SCHEDULES = ("constant", "warmup_cosine")
PHASE_KINDS = ("sft", "rce", "grpo")  # in training order


class _Section:
    """Field factory of one section: ``name: type = SECTION(default, help, kind=..., choices=..., ...)``.

    ``label`` is how the report names a changed value (``"GRPO lr {}"``; ``""``: a value that changes no result,
    never named); ``words`` names some values outright (``{True: "adaptive β"}``).
    ``at_least`` / ``positive`` / ``unit`` (a value in [0, 1)) declare the valid range; ``acts_from``
    defaults to the section's phase (``rce`` in the RCE section, ``grpo`` in the GRPO section, ``sft``
    elsewhere; none for ``run`` fields).
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, default, help: str, *, kind: str = "static", choices: tuple | None = None,
                 at_least: float | None = None, positive: bool = False, unit: bool = False,
                 acts_from: str | None = None, label: str | None = None, words: dict | None = None):
        assert kind in ("sweep", "static", "run"), kind
        if acts_from is None and kind != "run":
            acts_from = self.name if self.name in ("rce", "grpo") else "sft"
        assert acts_from in PHASE_KINDS + (None,), acts_from
        return dataclasses.field(default=default, metadata={
            "help": help, "section": self.name, "kind": kind, "choices": tuple(choices) if choices else None,
            "at_least": at_least, "positive": positive, "unit": unit, "acts_from": acts_from,
            "label": label, "words": dict(words) if words else None,
            "prefix": acts_from in ("sft", "rce")})


DATA, SELECTOR, SFT, RCE, GRPO, OPTIMIZER, EVALUATION, RUN = (_Section(s) for s in SECTIONS)


@dataclasses.dataclass(frozen=True)
class Config:
    # -- data and rewards ---------------------------------------------------------------------------
    data: str = DATA("", "A schema-v1 .npz; empty = the built-in synthetic data set (generated on first use).",
                     label="data {}")
    reward_mode: str = DATA("hard_plus_soft", "How a trajectory's labels become its reward.", choices=(
        "hard_plus_soft", "hard_plus_soft_v2", "separated", "hard_only", "soft_only", "hard01_plus_gtprob",
        "hard01_plus_gtprob_separated", "hard_plus_gtprob_plus_rel"), label="reward {}")
    w_hard: float = DATA(1.0, "Reward weight of the correct flag.", kind="sweep", label="w_hard {}")
    w_soft: float = DATA(1.0, "Reward weight of the soft score (accuracy or gt_prob).", kind="sweep", label="w_soft {}")
    w_rel: float = DATA(0.1, "Reward weight of the relevance score of wrong answers.", kind="sweep", label="w_rel {}")
    reward_normalization: str = DATA("z_score_clamp", "Per-query normalisation of rewards at dataset level "
                                     "('none' undoes the double normalisation, defect 4).",
                                     choices=("z_score_clamp", "z_score", "rank_normalize", "none"),
                                     label="reward normalisation {}")
    require_positive_query: bool = DATA(False, "Keep only queries with a correct trajectory.",
                                        words={True: "only queries with a positive", False: "all queries"})
    min_group_size: int = DATA(1, "Drop queries with fewer labelled trajectories.", at_least=1)
    data_transform: str = DATA("none", "Transforms of the training queries, joined by + and applied in order "
                               "(leverjax/data/curate.py): none, balanced, strict_balanced, low_pos_ratio, "
                               "mine_positives, diverse.", label="data transform {}")
    data_queries: int = DATA(0, "Keep a seeded subset of this many training queries after data_transform "
                             "(0: all).", at_least=0, label="{} training queries")
    data_queries_seed: int = DATA(0, "Seed of the data_queries subset.", at_least=0, label="training-query subset {}")
    rounds: int = DATA(1, "Data-loop rounds (leverjax/run/rounds.py): after each round's training its selector "
                       "generates new candidates for the training queries, a scorer labels them, and the next round "
                       "trains on them from scratch (1: no loop).", kind="run", at_least=1)
    round_mix: str = DATA(ORIGINAL_MIX, "Candidates per query and "
                          "method a round generates (the original's v4 mix by default).", kind="run")
    round_data: str = DATA("merge", "A round's new candidates are merged with its data, or replace the training "
                           "queries' trajectories.", choices=COMBINE_MODES, kind="run")
    round_scorer: str = DATA("oracle_realised", "The labeller of a round's candidates: the simulator's one-answer "
                             "score (as a VLM labeller gives) or its exact expected accuracy.",
                             choices=("oracle_realised", "oracle"), kind="run")

    # -- selector network ---------------------------------------------------------------------------
    hidden: int = SELECTOR(256, "Hidden width H of the selector.", at_least=1, label="hidden size {}")
    num_layers: int = SELECTOR(1, "Cross-attention layers.", at_least=1)
    num_heads: int = SELECTOR(1, "Attention heads (H must be divisible by it).", at_least=1)
    dropout: float = SELECTOR(0.5, "Dropout on the attended query and the projected candidates.", unit=True)
    attn_dropout: float = SELECTOR(0.1, "Dropout on the attention weights.", unit=True)
    temperature: float = SELECTOR(0.1, "Logits = cosine / temperature.", positive=True)
    gated: bool = SELECTOR(True, "Gated query-state update (V4-1); false turns a gate update into none (v2).",
                           words={True: "gated selector", False: "static (v2) selector"})
    # Variant axes: ``selector`` picks a preset of the original's variants; an axis left at its "preset" value
    # ("" or -1) takes the preset's value, any other value overrides it (--selector=v4_3 --scoring=additive).
    selector: str = SELECTOR("v4_1", "The selector network: a preset of the original's variants.", choices=(
        "v4_1", "v2", "v4_2", "v4_3", "v4_4", "v4_5_additive", "v4_5_bilinear", "v4_6", "v4_7", "v4_8", "v4_9",
        "v4_10"))
    update: str = SELECTOR("", "Query-state update ('' = the preset's).", choices=("", "none", "gate", "gru", "mix"))
    step_emb_rows: int = SELECTOR(-1, "Step-embedding rows (-1 = the preset's, 0 = none).", at_least=-1)
    scoring: str = SELECTOR("", "Scoring head ('' = the preset's).", choices=("", "dot", "additive", "bilinear"))
    set_term: str = SELECTOR("", "Set-aware logit term ('' = the preset's).",
                             choices=("", "none", "mmr", "coverage", "dpp"))
    mmr_reduction: str = SELECTOR("max", "MMR redundancy over the picks so far.", choices=("max", "mean"))
    cand_encoder: str = SELECTOR("", "Candidate set encoder ('' = the preset's).", choices=("", "none", "self_attn"))
    decoder: str = SELECTOR("", "Decoder ('' = the preset's).", choices=("", "pointer", "slots", "refine"))
    top_m: int = SELECTOR(8, "Refine decoder: candidates re-scored per step.", at_least=1)
    refine_type: str = SELECTOR("attn", "Refine decoder's re-scorer.", choices=("attn", "mlp"))
    refine_outside: str = SELECTOR("fill", "Refine decoder, logits outside the top-M: -100 (the original) or their "
                                   "first-stage logits.", choices=("fill", "cheap"))
    stop: str = SELECTOR("", "STOP token ('' = the preset's).", choices=("", "on", "off"))
    dropout_per_trajectory: bool = SELECTOR(False, "In RCE and GRPO steps every trajectory encodes its query and "
                                            "pool with its own dropout mask (the reference's noise; about M times "
                                            "the encoding cost); false: one mask per query, shared.",
                                            acts_from="rce")

    # -- SFT ------------------------------------------------------------------------------------------
    sft_epochs: int = SFT(20, "SFT epochs (0 skips SFT).", at_least=0, label="{} SFT epochs")
    sft_lr: float = SFT(1e-4, "SFT peak learning rate.", kind="sweep", label="SFT lr {}")
    sft_weight_decay: float = SFT(1e-3, "SFT AdamW weight decay.", kind="sweep", label="SFT weight decay {}")
    sft_batch_size: int = SFT(64, "Queries per SFT step.", at_least=1, label="SFT batch {}")
    sft_schedule: str = SFT("warmup_cosine", "SFT learning-rate schedule.", choices=SCHEDULES)
    sft_warmup_ratio: float = SFT(0.05, "Share of SFT steps spent warming up.")
    sft_label_smoothing: float = SFT(0.0, "SFT label smoothing.", kind="sweep", unit=True)
    sft_target: str = SFT("best", "SFT labels: each query's highest-reward trajectory, or its first one.",
                          choices=("best", "first"), label="SFT target: {} trajectory")

    # -- RCE warm-up ------------------------------------------------------------------------------------
    rce_epochs: int = RCE(5, "RCE epochs (0 skips RCE).", at_least=0, label="{} RCE epochs")
    rce_lr: float = RCE(1e-4, "RCE learning rate.", kind="sweep", label="RCE lr {}")
    rce_weight_decay: float = RCE(0.01, "RCE AdamW weight decay.", kind="sweep", label="RCE weight decay {}")
    rce_batch_size: int = RCE(16, "Queries per RCE step (the reference: 1).", at_least=1, label="RCE batch {}")
    rce_schedule: str = RCE("constant", "RCE learning-rate schedule.", choices=SCHEDULES)
    rce_warmup_ratio: float = RCE(0.05, "Share of RCE steps spent warming up (warmup_cosine only).")
    rce_tau_start: float = RCE(2.0, "RCE softmax temperature τ at the first step.", kind="sweep", positive=True,
                               label="RCE τ from {}")
    rce_tau_end: float = RCE(0.5, "RCE τ at the last step (linear in between).", kind="sweep", positive=True,
                             label="RCE τ to {}")
    rce_rewards: str = RCE("raw", "RCE weights from raw rewards (the launch script) or normalised ones.",
                           choices=("raw", "normalized"), label="RCE on {} rewards")
    rce_top1_only: bool = RCE(False, "Plain CE on each query's first trajectory instead of RCE.",
                              words={True: "RCE on the first trajectory only", False: "RCE on all trajectories"})
    label_smoothing: float = RCE(0.0, "Label smoothing of RCE and the validation loss.", kind="sweep", unit=True,
                                 acts_from="sft")  # the validation loss of every phase

    # -- GRPO --------------------------------------------------------------------------------------------
    grpo_epochs: int = GRPO(3, "GRPO epochs (0 skips GRPO).", at_least=0, label="{} GRPO epochs")
    grpo_lr: float = GRPO(5e-6, "GRPO learning rate.", kind="sweep", label="GRPO lr {}")
    grpo_weight_decay: float = GRPO(0.01, "GRPO AdamW weight decay.", kind="sweep", label="GRPO weight decay {}")
    grpo_batch_size: int = GRPO(16, "Queries per GRPO step (the reference: 1).", at_least=1, label="GRPO batch {}")
    grpo_schedule: str = GRPO("constant", "GRPO learning-rate schedule.", choices=SCHEDULES)
    grpo_warmup_ratio: float = GRPO(0.05, "Share of GRPO steps spent warming up (warmup_cosine only).")
    advantage: str = GRPO("rank", "Group-relative advantage: z-score (scheme 5), rank (before it), mean-centred "
                          "without std scaling (Dr. GRPO), leave-one-out, the rewards themselves, or (on-policy only) "
                          "the reward minus the greedy selection's reward (ReMax).",
                          choices=("zscore", "rank", "mean", "rloo", "none", "remax"),
                          words={"zscore": "z-score advantages", "rank": "rank advantages",
                                 "mean": "mean-centred advantages (Dr. GRPO)", "rloo": "RLOO advantages",
                                 "none": "raw rewards as advantages", "remax": "ReMax advantages"})
    adv_min_std: float = GRPO(0.1, "Floor of the group std in z-score advantages.", kind="sweep", positive=True,
                              label="advantage std floor {}")
    adv_clip: float = GRPO(5.0, "Advantages are clipped to ±this.", kind="sweep", label="advantage clip {}")
    clip_eps: float = GRPO(0.2, "PPO clip ε.", kind="sweep", label="PPO ε {}")
    clip_eps_high: float = GRPO(-1.0, "Upper PPO clip; negative means the same as clip_eps.", kind="sweep",
                                label="upper PPO ε {}")
    kl_beta: float = GRPO(0.15, "Initial KL coefficient β.", kind="sweep", label="β {}")
    kl_estimator: str = GRPO("reference", "KL estimator: the reference's mean(ρ−1−log ρ), k3, or none.",
                             choices=("reference", "k3", "none"), label="KL estimator {}")
    adaptive_beta: bool = GRPO(True, "Adapt β after every step (×factor above beta_kl_high, ÷ below beta_kl_low).",
                               words={True: "adaptive β", False: "fixed β"})
    beta_kl_high: float = GRPO(0.1, "KL above which β grows.", label="β raised above KL {}")
    beta_kl_low: float = GRPO(0.01, "KL below which β shrinks.", label="β lowered below KL {}")
    beta_factor: float = GRPO(1.5, "Factor of each β adaptation.", positive=True)
    beta_min: float = GRPO(1e-3, "Lower bound of β.")
    beta_max: float = GRPO(10.0, "Upper bound of β.")
    clip_only: bool = GRPO(False, "PPO clip without the KL term (scheme 7).",
                           words={True: "PPO clip only (no KL term)", False: "PPO clip with KL"})
    clip_only_ignores_beta: bool = GRPO(True, "Clip-only mode drops β·KL whatever β says (defect 6); false applies it.",
                                        words={False: "β·KL applied in clip-only mode", True: "clip-only ignores β"})
    freeze_backbone: bool = GRPO(True, "input_proj, query_proj and cand_proj get no GRPO updates.",
                                 words={True: "frozen backbone in GRPO", False: "backbone trained in GRPO"})
    grpo_top_k: bool = GRPO(True, "Top-k-by-reward curriculum (defect 3 when on).",
                            words={True: "top-k curriculum", False: "no top-k curriculum"})
    top_k_first: int = GRPO(3, "k in the first GRPO epoch.", at_least=0, label="top-k {} in the first GRPO epoch")
    top_k_after: int = GRPO(5, "k in later GRPO epochs.", at_least=0, label="top-k {} afterwards")
    top_k_ties: str = GRPO("reference", "Which of equal rewards the top-k keeps: those torch.topk keeps on a CPU "
                           "(as the reference trainer), the lowest indices, or random ones.",
                           choices=("reference", "lowest_index", "random"))
    reference_policy: str = GRPO("sft", "Policy of the KL and the ratio: the SFT model (defect 1), the post-RCE "
                                 "model, or refreshed every epoch.", choices=("sft", "post_rce", "refresh_each_epoch"),
                                 acts_from="rce",
                                 words={"sft": "SFT reference policy", "post_rce": "post-RCE reference policy",
                                        "refresh_each_epoch": "reference policy refreshed each epoch"})
    # (reference_policy acts from RCE: it decides the reference the RCE epochs are compared with)
    ratio_dropout: bool = GRPO(True, "ℓ_new with dropout, ℓ_ref without (defect 2); false: both in eval mode "
                               "(on-policy GRPO is always in eval mode).",
                               words={True: "dropout in the ratio", False: "no dropout in the ratio"})
    dual_clip: float = GRPO(0.0, "Dual-clip constant c > 1: the loss of a negative advantage is at most c·|A| "
                            "however large the ratio (0: off).", kind="sweep", at_least=0.0, label="dual clip {}")
    entropy_coef: float = GRPO(0.0, "Entropy bonus: the GRPO loss minus this times the mean per-step entropy of "
                               "the policy on the trajectories it trains on.", kind="sweep", at_least=0.0,
                               label="entropy bonus {}")
    grpo_mode: str = GRPO("offline", "offline: GRPO on the data's labelled trajectories (the reference); on_policy: "
                          "every step samples `rollouts` selections per query from the current policy and a scorer "
                          "scores them (leverjax/core/rollout.py).", choices=("offline", "on_policy"),
                          words={"offline": "offline GRPO", "on_policy": "on-policy GRPO"})
    rollouts: int = GRPO(8, "On-policy GRPO: selections sampled per query and step (the group size).", at_least=2,
                         label="{} rollouts per query")
    rollout_temperature: float = GRPO(1.0, "On-policy GRPO: sampling temperature (1: the policy itself).",
                                      kind="sweep", positive=True, label="rollout temperature {}")
    inner_epochs: int = GRPO(1, "On-policy GRPO: optimizer updates on each step's samples (μ); the ratio is "
                             "taken against the policy that sampled them.", at_least=1, label="μ = {}")
    rollout_scorer: str = GRPO("oracle", "On-policy GRPO: what scores a sampled selection: the simulator's exact "
                               "expected accuracy, its one-answer score, or a reward model fit on the data's labelled "
                               "trajectories (leverjax/core/reward_model.py).",
                               choices=("oracle", "oracle_realised", "reward_model"),
                               words={"oracle": "exact oracle scorer", "oracle_realised": "one-answer scorer",
                                      "reward_model": "reward-model scorer"})
    dynamic_sampling: int = GRPO(0, "On-policy GRPO (DAPO): a group whose raw scores are all equal is sampled "
                                 "again, up to this many times; still flat, it is dropped (0: off).", at_least=0,
                                 label="dynamic sampling ×{}")
    grpo_positive_only_epochs: int = GRPO(0, "First GRPO epochs on queries with a positive only (scheme 9).",
                                          at_least=0, label="{} GRPO epochs on queries with a positive first")

    # -- optimizer (all phases) ----------------------------------------------------------------------------
    adam_b1: float = OPTIMIZER(0.9, "AdamW β₁.")
    adam_b2: float = OPTIMIZER(0.999, "AdamW β₂.")
    adam_eps: float = OPTIMIZER(1e-8, "AdamW ε.")
    clip_norm: float = OPTIMIZER(1.0, "Global gradient-norm clip.")

    # -- evaluation ---------------------------------------------------------------------------------------
    eval_shots: int = EVALUATION(4, "Greedy selections of 1..eval_shots demonstrations are scored (1-16).",
                                 at_least=1, label="{} evaluation shots")
    eval_chunk: int = EVALUATION(256, "Queries per evaluation chunk (memory, not results).", at_least=1, label="")
    test_questions: int = EVALUATION(0, "The realised accuracy (synthetic data) counts only a seeded subset of this "
                                     "many test questions, as a VLM evaluation on n questions would (0: all).",
                                     at_least=0, label="realised accuracy on {} test questions")
    test_questions_seed: int = EVALUATION(0, "Seed of the test_questions subset.", at_least=0,
                                          label="test-question subset {}")
    best_metric: str = EVALUATION("val_expected_reward", "Metric that picks the best epoch of the last phase (the "
                                  "default lost least on the version-3 synthetic data; on today's default data "
                                  "val_loss loses least: docs/results/metric-validity.md).", label="best epoch by {}")
    best_mode: str = EVALUATION("auto", "Whether the best epoch minimises or maximises best_metric; auto: minimise "
                                "losses, KL and redundancy, maximise the others.", choices=("auto", "min", "max"))

    # -- seeds and output ---------------------------------------------------------------------------------
    seed: int = RUN(0, "First seed.", kind="run")
    seeds: int = RUN(1, "Seeds per run (seed, seed+1, ...), trained together.", kind="run", at_least=1)
    checkpoint_every: int = RUN(1, "Epochs between checkpoints (a phase's last epoch is always saved).",
                                kind="run", at_least=1)
    checkpoint_seconds: float = RUN(30.0, "Least seconds of training between two checkpoints (0: every "
                                    "checkpoint_every epochs). A phase's last epoch is always saved; a killed run "
                                    "resumes from its last checkpoint, recomputing at most about this much "
                                    "(identically). A save of the vmapped state of 5-10 runs costs about 0.15 s.",
                                    kind="run", at_least=0)
    workdir: str = RUN("checkpoints", "Output root of a single experiment (checkpoints/<experiment>/).", kind="run")


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def meta(name: str) -> Mapping[str, Any]:
    """The declaration of field ``name`` (help, section, kind, choices, range, acts_from, prefix)."""
    return FIELDS[name].metadata


def names(*, kind: str | None = None, section: str | None = None, prefix: bool | None = None) -> tuple[str, ...]:
    """The fields matching every given declaration, in declaration order."""
    return tuple(n for n, f in FIELDS.items()
                 if (kind is None or f.metadata["kind"] == kind) and (section is None or f.metadata["section"] == section)
                 and (prefix is None or f.metadata["prefix"] == prefix))


SWEEPABLE = names(kind="sweep")  # traced scalars: vmappable without recompiling
RUN_ONLY = names(kind="run")  # change neither the program nor one run's result


def field_type(name: str) -> type:
    return type(FIELDS[name].default)


def parse_value(name: str, text: str) -> Any:
    """Parses a command-line string into the type of config field ``name``."""
    if name not in FIELDS:
        raise ConfigError(f"unknown config field {name!r}; valid fields: {', '.join(sorted(FIELDS))}")
    kind = field_type(name)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        return kind(text)
    except ValueError:
        what = "boolean (true/false)" if kind is bool else kind.__name__
        raise ConfigError(f"--{name}={text!r} is not a valid {what}") from None


def _check_field(name: str, value: Any) -> None:
    m = meta(name)
    if m["choices"] and value not in m["choices"]:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(m['choices'])}")
    if m["at_least"] is not None and value < m["at_least"]:
        raise ConfigError(f"{name}={value} must be at least {m['at_least']}")
    if m["positive"] and not value > 0:
        raise ConfigError(f"{name}={value} must be positive")
    if m["unit"] and not 0.0 <= value < 1.0:
        raise ConfigError(f"{name}={value} must lie in [0, 1)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value} must be finite")


def validate(cfg: Config) -> Config:
    """Checks every field's declared choices and range and the rules between fields; returns ``cfg`` or
    raises :class:`ConfigError` naming the field."""
    for name in FIELDS:
        _check_field(name, getattr(cfg, name))
    parse_spec(cfg.data_transform)
    parse_mix(cfg.round_mix)
    if cfg.advantage == "remax" and cfg.grpo_mode != "on_policy":
        raise ConfigError("advantage=remax needs grpo_mode=on_policy (its baseline is the greedy selection's score)")
    if 0.0 < cfg.dual_clip <= 1.0:
        raise ConfigError(f"dual_clip={cfg.dual_clip} must be 0 (off) or greater than 1")
    if cfg.hidden % cfg.num_heads:
        raise ConfigError(f"hidden={cfg.hidden} must be divisible by num_heads={cfg.num_heads}")
    if cfg.eval_shots > 16:
        raise ConfigError(f"eval_shots={cfg.eval_shots} must lie in 1..16")
    if cfg.sft_epochs + cfg.rce_epochs + cfg.grpo_epochs + cfg.grpo_positive_only_epochs == 0:
        raise ConfigError("the config trains nothing: sft_epochs, rce_epochs and grpo_epochs are all 0")
    selector_config(cfg, 2)  # a meaningless combination of variant axes fails here, naming the axes
    return cfg


def selector_config(cfg: Config, shot_num: int) -> model_lib.SelectorConfig:
    """The network of ``cfg`` for ``shot_num``-step trajectories: its ``selector`` preset with the axis
    fields that are not at their preset value ("" / -1) applied over it."""
    axes = {name: getattr(cfg, name) for name in ("update", "scoring", "set_term", "cand_encoder", "decoder")
            if getattr(cfg, name)}
    if cfg.step_emb_rows >= 0:
        axes["step_emb_rows"] = cfg.step_emb_rows
    if cfg.stop:
        axes["stop"] = cfg.stop == "on"
    return model_lib.preset_config(
        cfg.selector, shot_num, axes, hidden=cfg.hidden, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, temperature=cfg.temperature, gated=cfg.gated,
        mmr_reduction=cfg.mmr_reduction, top_m=cfg.top_m, refine_type=cfg.refine_type,
        refine_outside=cfg.refine_outside)


def coerce(name: str, value: Any) -> Any:
    """``value`` as the type of field ``name`` (strings are parsed; ints widen to floats)."""
    kind = field_type(name)
    if isinstance(value, str) and kind is not str:
        return parse_value(name, value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{name}={value!r} must be a {kind.__name__}")
    return value


def replace(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """``cfg`` with ``overrides`` applied (unknown names raise :class:`ConfigError`), validated."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(FIELDS))}")
    return validate(dataclasses.replace(cfg, **{n: coerce(n, v) for n, v in overrides.items()}))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def static_signature(cfg: Config) -> str:
    """A key equal for two configs exactly when they can share one compiled program."""
    return json.dumps({k: v for k, v in to_dict(cfg).items() if meta(k)["kind"] == "static"}, sort_keys=True)


def prefix_fields(cfg: Config, through: str = "rce") -> dict:
    """The fields that can change the phases up to kind ``through`` (``sft``: the state after SFT; ``rce``:
    the state before the first GRPO phase): part of the prefix-cache key of that state."""
    upto = PHASE_KINDS[: PHASE_KINDS.index(through) + 1]
    return {k: v for k, v in to_dict(cfg).items() if meta(k)["acts_from"] in upto}


_MINIMISED = ("loss", "kl", "redundancy")


def best_mode(cfg: Config) -> str:
    """``cfg.best_mode`` with ``auto`` resolved from the metric's name: min for losses, KL and redundancy."""
    if cfg.best_mode != "auto":
        return cfg.best_mode
    return "min" if cfg.best_metric.endswith(_MINIMISED) else "max"


def hyperparameters(cfg: Config) -> dict:
    """The sweepable fields of ``cfg`` as float scalars (the traced inputs of the training program)."""
    hp = {name: float(getattr(cfg, name)) for name in SWEEPABLE}
    if hp["clip_eps_high"] < 0:
        hp["clip_eps_high"] = hp["clip_eps"]
    return hp


def describe(name: str, value: Any | None = None) -> str:
    """One line of ``--help`` for field ``name``: its help, default and choices."""
    m = meta(name)
    value = FIELDS[name].default if value is None else value
    parts = [f"default {value!r}"]
    if m["choices"]:
        parts.append("one of " + ", ".join(m["choices"]))
    if m["kind"] == "sweep":
        parts.append("sweepable")
    return f"{m['help']} [{'; '.join(parts)}]"
