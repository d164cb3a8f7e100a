"""The run configuration: every knob of the reference pipeline (reference.md §4–§5) in one dataclass.

Fields split in two kinds (the rejax way):

* **sweepable** (:data:`SWEEPABLE`): learning rates, weight decays, β, ε, temperatures, reward weights,
  label smoothing, the advantage floor/clip. They enter the compiled program as traced scalars, so
  runs that differ only in them (and in the seed) share one compile and are vmapped together.
* **static**: shapes, epoch counts, batch sizes, the model variant, methods and switches. Changing one
  means a new compile; :func:`static_signature` is the key the launcher groups runs by.

Defaults are the reference values; where the reference had a defect (reference.md §5) the default
reproduces it and a field offers the fix.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from leverjax import model as model_lib
from leverjax.advantages import ADVANTAGE_METHODS
from leverjax.errors import ConfigError
from leverjax.losses import KL_ESTIMATORS
from leverjax.optim import SCHEDULES
from leverjax.rewards import NORMALIZATIONS, REWARD_MODES


@dataclasses.dataclass(frozen=True)
class Config:
    # -- data and rewards (reference.md §1–§2) ----------------------------------------------------
    data: str = ""  # a schema-v1 .npz; "" = the built-in synthetic data set (generated on first use)
    reward_mode: str = "hard_plus_soft"
    w_hard: float = 1.0
    w_soft: float = 1.0
    w_rel: float = 0.1
    reward_normalization: str = "z_score_clamp"  # per-query, dataset level; "none" undoes defect 5.4's double normalisation
    require_positive_query: bool = False  # keep only queries with a correct trajectory
    min_group_size: int = 1  # drop queries with fewer labelled trajectories

    # -- selector network (reference.md §3) -------------------------------------------------------
    hidden: int = 256
    num_layers: int = 1
    num_heads: int = 1
    dropout: float = 0.5
    attn_dropout: float = 0.1
    temperature: float = 0.1
    gated: bool = True  # False: the "v2 static" variant (turns a gate update into none)
    # Variant axes (all static, none changes only GRPO). ``selector`` picks a preset of the original's
    # variants; an axis field left at its "preset" value ("" or -1) takes the preset's value, any other
    # value overrides it (``--selector=v4_3 --scoring=additive`` is V4-3 with the additive head).
    # preset: v4_1 | v2 | v4_2 | v4_3 | v4_4 | v4_5_additive | v4_5_bilinear | v4_6 | v4_7 | v4_8 | v4_9 | v4_10
    selector: str = "v4_1"
    update: str = ""  # query-state update: "" (preset) | none | gate | gru | mix
    # step embeddings: -1 (preset; the presets use the shot number S, 8 in v4_6/v4_7) | 0 (none) | n rows
    step_emb_rows: int = -1
    scoring: str = ""  # scoring head: "" (preset) | dot | additive | bilinear
    set_term: str = ""  # set-aware logit term: "" (preset) | none | mmr | coverage | dpp
    mmr_reduction: str = "max"  # MMR redundancy over the picks so far: max | mean
    cand_encoder: str = ""  # candidate set encoder: "" (preset) | none | self_attn
    decoder: str = ""  # "" (preset) | pointer | slots | refine
    top_m: int = 8  # refine decoder: candidates re-scored per step
    refine_type: str = "attn"  # refine decoder: attn | mlp
    # refine decoder, logits outside the top-M: fill (-100, the original) | cheap (their first-stage logits)
    refine_outside: str = "fill"
    stop: str = ""  # STOP token: "" (preset) | on | off

    # -- SFT (reference.md §4, trained on the K-pool as §5.8 asks) -------------------------------
    sft_epochs: int = 20
    sft_lr: float = 1e-4
    sft_weight_decay: float = 1e-3
    sft_batch_size: int = 64
    sft_schedule: str = "warmup_cosine"
    sft_warmup_ratio: float = 0.05
    sft_label_smoothing: float = 0.0
    sft_target: str = "best"  # "best": each query's highest-reward trajectory; "first": its first one

    # -- RCE warm-up -------------------------------------------------------------------------------
    rce_epochs: int = 5
    rce_lr: float = 1e-4
    rce_weight_decay: float = 0.01
    rce_batch_size: int = 16  # queries per optimizer step (the reference: 1)
    rce_schedule: str = "constant"
    rce_warmup_ratio: float = 0.05
    rce_tau_start: float = 2.0
    rce_tau_end: float = 0.5
    rce_rewards: str = "raw"  # "raw" (the launch script) or "normalized" (the Python default)
    rce_top1_only: bool = False  # plain CE on each query's first trajectory
    label_smoothing: float = 0.0  # RCE and validation loss

    # -- GRPO --------------------------------------------------------------------------------------
    grpo_epochs: int = 3
    grpo_lr: float = 5e-6
    grpo_weight_decay: float = 0.01
    grpo_batch_size: int = 16  # queries per optimizer step (the reference: 1)
    grpo_schedule: str = "constant"
    grpo_warmup_ratio: float = 0.05
    advantage: str = "rank"  # zscore | rank | mean | rloo | none
    adv_min_std: float = 0.1
    adv_clip: float = 5.0
    clip_eps: float = 0.2
    clip_eps_high: float = -1.0  # upper PPO clip; < 0 means "same as clip_eps"
    kl_beta: float = 0.15
    kl_estimator: str = "reference"  # reference (ρ−1−log ρ) | k3 | none
    adaptive_beta: bool = True
    beta_kl_high: float = 0.1
    beta_kl_low: float = 0.01
    beta_factor: float = 1.5
    beta_min: float = 1e-3
    beta_max: float = 10.0
    clip_only: bool = False  # PPO clip without the KL term (scheme 7)
    clip_only_ignores_beta: bool = True  # the reference's defect 5.6; False applies β·KL in clip-only mode
    freeze_backbone: bool = True  # input_proj, query_proj, cand_proj get no GRPO updates
    grpo_top_k: bool = True  # top-k-by-reward curriculum (defect 5.3 when True)
    top_k_first: int = 3  # k in the first GRPO epoch
    top_k_after: int = 5  # k afterwards
    reference_policy: str = "sft"  # sft (the reference, defect 5.1) | post_rce | refresh_each_epoch
    ratio_dropout: bool = True  # ℓ_new with dropout, ℓ_ref without (defect 5.2); False: both in eval mode
    grpo_positive_only_epochs: int = 0  # first GRPO epochs on queries with a positive only (scheme 9)

    # -- optimizer (all phases) --------------------------------------------------------------------
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_norm: float = 1.0

    # -- evaluation, seeds, output -----------------------------------------------------------------
    eval_shots: int = 4  # greedy selections of 1..eval_shots demonstrations are scored
    eval_chunk: int = 256  # queries per evaluation chunk (memory bound, not a result)
    best_metric: str = "val_loss"  # the epoch kept as "best" within the last phase
    best_mode: str = "min"
    seed: int = 0
    seeds: int = 1
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch of a phase is always saved)
    workdir: str = "checkpoints"


# Fields that are traced scalars in the compiled program (vmappable without recompiling).
SWEEPABLE = (
    "w_hard", "w_soft", "w_rel",
    "sft_lr", "sft_weight_decay", "sft_label_smoothing",
    "rce_lr", "rce_weight_decay", "rce_tau_start", "rce_tau_end", "label_smoothing",
    "grpo_lr", "grpo_weight_decay", "adv_min_std", "adv_clip", "clip_eps", "clip_eps_high", "kl_beta",
)
# Fields that change neither the program nor the result of one run.
RUN_ONLY = ("seed", "seeds", "checkpoint_every", "workdir")

CHOICES = {
    "selector": tuple(model_lib.PRESETS),
    "update": ("",) + model_lib.UPDATES,
    "scoring": ("",) + model_lib.SCORINGS,
    "set_term": ("",) + model_lib.SET_TERMS,
    "mmr_reduction": model_lib.MMR_REDUCTIONS,
    "cand_encoder": ("",) + model_lib.CAND_ENCODERS,
    "decoder": ("",) + model_lib.DECODERS,
    "refine_type": model_lib.REFINE_TYPES,
    "refine_outside": model_lib.REFINE_OUTSIDE,
    "stop": ("", "on", "off"),
    "sft_target": ("best", "first"),
    "rce_rewards": ("raw", "normalized"),
    "reference_policy": ("sft", "post_rce", "refresh_each_epoch"),
    "best_mode": ("min", "max"),
    "sft_schedule": SCHEDULES,
    "rce_schedule": SCHEDULES,
    "grpo_schedule": SCHEDULES,
    "advantage": ADVANTAGE_METHODS,
    "kl_estimator": KL_ESTIMATORS,
    "reward_mode": REWARD_MODES,
    "reward_normalization": NORMALIZATIONS,
}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def field_type(name: str) -> type:
    return type(getattr(Config(), name))


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
        raise ConfigError(f"--{name}={text!r} is not a valid {kind.__name__}") from None


def validate(cfg: Config) -> Config:
    """Checks choices and ranges; returns ``cfg`` or raises :class:`ConfigError` naming the field."""
    for name, choices in CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")
    positive = ("hidden", "num_layers", "num_heads", "sft_batch_size", "rce_batch_size", "grpo_batch_size",
                "eval_shots", "eval_chunk", "seeds", "checkpoint_every", "min_group_size")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be at least 1")
    for name in ("sft_epochs", "rce_epochs", "grpo_epochs", "grpo_positive_only_epochs", "top_k_first",
                 "top_k_after"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must not be negative")
    if cfg.hidden % cfg.num_heads:
        raise ConfigError(f"hidden={cfg.hidden} must be divisible by num_heads={cfg.num_heads}")
    for name in ("dropout", "attn_dropout", "sft_label_smoothing", "label_smoothing"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must lie in [0, 1)")
    for name in ("temperature", "rce_tau_start", "rce_tau_end", "beta_factor", "adv_min_std"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}={getattr(cfg, name)} must be positive")
    if not 1 <= cfg.eval_shots <= 16:
        raise ConfigError(f"eval_shots={cfg.eval_shots} must lie in 1..16")
    if cfg.step_emb_rows < -1 or cfg.top_m < 1:
        raise ConfigError(f"step_emb_rows={cfg.step_emb_rows} must be -1 (preset), 0 or more and top_m={cfg.top_m} "
                          "at least 1")
    selector_config(cfg, 2)  # a meaningless combination of variant axes fails here, naming the axes
    if cfg.sft_epochs + cfg.rce_epochs + cfg.grpo_epochs + cfg.grpo_positive_only_epochs == 0:
        raise ConfigError("the config trains nothing: sft_epochs, rce_epochs and grpo_epochs are all 0")
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


def replace(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """``cfg`` with ``overrides`` applied (unknown names raise :class:`ConfigError`), validated."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(FIELDS))}")
    values = {}
    for name, value in overrides.items():
        kind = field_type(name)
        if isinstance(value, str) and kind is not str:
            value = parse_value(name, value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, kind):
            raise ConfigError(f"{name}={value!r} must be a {kind.__name__}")
        values[name] = value
    return validate(dataclasses.replace(cfg, **values))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: Mapping[str, Any]) -> Config:
    return replace(Config(), dict(values))


def static_signature(cfg: Config) -> str:
    """A key equal for two configs exactly when they can share one compiled program."""
    skip = set(SWEEPABLE) | set(RUN_ONLY)
    return json.dumps({k: v for k, v in to_dict(cfg).items() if k not in skip}, sort_keys=True)


def hyperparameters(cfg: Config) -> dict:
    """The sweepable fields of ``cfg`` as float scalars (the traced inputs of the training program)."""
    hp = {name: float(getattr(cfg, name)) for name in SWEEPABLE}
    if hp["clip_eps_high"] < 0:
        hp["clip_eps_high"] = hp["clip_eps"]
    return hp
