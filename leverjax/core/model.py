"""The pointer selector: a Flax (linen) transcription of the original Lever-Plus network and of
its variants (state updates, scoring heads, set-aware terms, a candidate encoder, slot and two-stage
decoders, a STOP token), each an axis of :class:`SelectorConfig`.

Given a query embedding ``q [d]`` and its candidate pool ``C [K, d]`` the network picks demonstrations
one after another. Everything is batched over a leading query axis ``B``:

* :meth:`PointerSelector.encode` runs steps 1-5 once per query and pool (input projection, cross
  attention, dropout, query/candidate projections, L2 normalisation);
* :meth:`PointerSelector.score` scores all ``M`` trajectories of a query from that one encoding
  (teacher forcing, step 6), returning per-step log-probabilities ``[B, M, S, K]``;
* :meth:`PointerSelector.decode` greedily picks any number of steps for evaluation.

Parameter names follow the PyTorch original's state-dict keys, so checkpoints map one to one. The rule:
a torch key's module path is joined with ``/``, a ``ModuleList``/``Sequential`` index is appended to its
parent's name with ``_`` (``cross_attn_layers.0`` → ``cross_attn_layers_0``, ``refine_mlp.3`` →
``refine_mlp_3``, ``cand_encoder.layers.0`` → ``cand_encoder/layers_0``); ``nn.Linear`` becomes a Dense
whose ``kernel [in, out]`` is the transpose of the torch ``weight`` (``bias`` as is); ``nn.LayerNorm``
``weight``/``bias`` become ``scale``/``bias``; ``nn.Embedding.weight`` becomes ``embedding``
(``step_emb/embedding``, ``slot_emb/embedding``); everything else keeps torch's name and layout:
``nn.MultiheadAttention``'s packed ``in_proj_weight [3H, H]``/``in_proj_bias`` (its ``out_proj`` is a
Linear), ``nn.GRUCell``'s ``weight_ih``/``weight_hh``/``bias_ih``/``bias_hh``, ``nn.Bilinear``'s
``weight [1, H, H]`` and the bare parameters ``div_lambda``, ``topic_prototypes``, ``cover_lambda``,
``dpp_lambda`` and ``stop_token``.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from leverjax.core.layers import (
    PAD_LOGIT, Bilinear, CandidateEncoder, Dense, Dropout, GRUCell, MultiheadAttention, identity_plus_noise,
    input_proj_init, l2_normalize, normal_init, scaled_init, torch_linear,
)

# Logit given to a candidate already chosen in an earlier step. The reference uses this finite value
# (not -inf), so chosen candidates keep a tiny probability and take part in label smoothing.
CHOSEN_LOGIT = -100.0


# The variant axes (each a static field of :class:`SelectorConfig`; see its docstring).
UPDATES = ("none", "gate", "gru", "mix")
SCORINGS = ("dot", "additive", "bilinear")
SET_TERMS = ("none", "mmr", "coverage", "dpp")
MMR_REDUCTIONS = ("max", "mean")
CAND_ENCODERS = ("none", "self_attn")
DECODERS = ("pointer", "slots", "refine")
REFINE_TYPES = ("attn", "mlp")
REFINE_OUTSIDE = ("fill", "cheap")
MIX_ALPHA = 0.6  # the "mix" update: h <- normalise(0.6 h + 0.4 c)
LAMBDA_INIT = -2.0  # raw init of cover_lambda / dpp_lambda (softplus -> 0.127)
DIV_LAMBDA_INIT = 0.1  # raw init of every div_lambda entry (softplus -> 0.744)


@dataclasses.dataclass(frozen=True)
class SelectorConfig:
    """Static shape and variant of the selector (changing any field means a new compile).

    The variant is a combination of independent axes (the original's variants are presets of them,
    see :data:`leverjax.core.config.SELECTOR_PRESETS`):

    * ``update`` — how the query state moves after a pick ``c``: ``none`` (it stays the encoded query),
      ``gate`` (the V4-1 gate; ``gated=False`` turns it into ``none``), ``gru`` (a torch GRUCell,
      ``h <- normalise(GRU(c, h))``) or ``mix`` (``h <- normalise(0.6 h + 0.4 c)``);
    * ``step_emb_rows`` — 0, or that many learned step embeddings: step t scores with
      ``normalise(h + E[min(t, rows - 1)])`` (the state itself is updated from ``h``);
    * ``scoring`` — ``dot`` (cosine / τ), ``additive`` (``v·tanh(W_q h + b + W_c c) / τ``) or
      ``bilinear`` (``hᵀ W c / τ``);
    * ``set_term`` — added to the logits of every step after the first: ``mmr`` (minus
      softplus(λ_t) × the max, or mean, cosine to the picks so far), ``coverage`` (plus the topic
      coverage gain) or ``dpp`` (plus softplus(δ) × log(1e-6 + 1 − min(s², 0.999)), s the max cosine
      of low-rank features to the picks so far);
    * ``cand_encoder`` — ``self_attn``: one pre-LN transformer encoder layer over the projected
      candidates (GELU, dropout ``dropout`` everywhere, padded slots masked as keys);
    * ``decoder`` — ``pointer`` (step by step), ``slots`` (one learned slot per step, refined by slot
      self-attention and slot→candidate attention, all steps scored from the query alone; picks only
      mask later steps) or ``refine`` (the ``top_m`` best logits are re-scored by an attention or MLP
      refiner; every other candidate gets −100, or its cheap logit with ``refine_outside='cheap'``);
    * ``stop`` — a learned STOP candidate at index K: logits over K + 1, never masked; once a row
      picked STOP every later step puts all its mass on STOP (logit 0, the rest −100) and its state
      stays.
    """

    hidden: int = 256  # H
    num_layers: int = 1  # L cross-attention layers
    num_heads: int = 1
    dropout: float = 0.5  # on the attended query and the projected candidates
    attn_dropout: float = 0.1
    temperature: float = 0.1  # logits = cosine / temperature
    gated: bool = True  # False turns update="gate" into "none" (the "v2 static" variant: s_t = s_0)
    update: str = "gate"
    step_emb_rows: int = 0
    scoring: str = "dot"
    set_term: str = "none"
    mmr_reduction: str = "max"
    div_lambda_size: int = 2  # entries of the MMR weights (the original: its shot number)
    num_topics: int = 16
    dpp_rank: int = 32
    cand_encoder: str = "none"
    decoder: str = "pointer"
    top_m: int = 8
    refine_type: str = "attn"
    refine_outside: str = "fill"
    num_slot_layers: int = 2
    slot_rows: int = 8
    stop: bool = False

    @property
    def state_update(self) -> str:
        """The effective update rule (``gated=False`` makes the gate ``none``)."""
        return "none" if (self.update == "gate" and not self.gated) else self.update

    @property
    def prefix_consistent(self) -> bool:
        """Whether the first n picks of a longer greedy decode equal an n-step decode (not so for slots:
        the number of slots is the number of steps and every slot attends to all the others)."""
        return self.decoder != "slots"

    def check(self) -> "SelectorConfig":
        """Raises :class:`~leverjax.errors.ConfigError` for an unknown axis value or a combination
        without meaning; returns ``self``."""
        from leverjax.errors import ConfigError

        for name, choices in (("update", UPDATES), ("scoring", SCORINGS), ("set_term", SET_TERMS),
                              ("mmr_reduction", MMR_REDUCTIONS), ("cand_encoder", CAND_ENCODERS),
                              ("decoder", DECODERS), ("refine_type", REFINE_TYPES),
                              ("refine_outside", REFINE_OUTSIDE)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of: {', '.join(choices)}")
        for name in ("div_lambda_size", "num_topics", "dpp_rank", "top_m", "slot_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.step_emb_rows < 0 or self.num_slot_layers < 0:
            raise ConfigError("step_emb_rows and num_slot_layers must not be negative")
        if self.decoder == "slots" and (self.state_update != "none" or self.step_emb_rows):
            raise ConfigError("decoder=slots has no query state: it needs update=none (or gated=false) and "
                              "step_emb_rows=0")
        if self.decoder == "refine" and self.stop:
            raise ConfigError("decoder=refine cannot be combined with a STOP token")
        return self


# The original's selectors as presets of the axes. "S" stands for the shot number (the steps of the
# training trajectories), which sizes step embeddings and MMR weights like the original's shot_num.
PRESETS = {
    "v4_1": {"update": "gate"},
    "v2": {"update": "none"},
    "v4_2": {"update": "gru", "step_emb_rows": "S"},
    "v4_3": {"update": "gru", "step_emb_rows": "S", "set_term": "mmr"},
    "v4_4": {"update": "gru", "step_emb_rows": "S", "set_term": "mmr", "cand_encoder": "self_attn"},
    "v4_5_additive": {"update": "gru", "step_emb_rows": "S", "scoring": "additive"},
    "v4_5_bilinear": {"update": "gru", "step_emb_rows": "S", "scoring": "bilinear"},
    "v4_6": {"update": "gru", "step_emb_rows": 8, "set_term": "coverage"},
    "v4_7": {"update": "gru", "step_emb_rows": 8, "set_term": "dpp"},
    "v4_8": {"update": "none", "decoder": "slots"},
    "v4_9": {"update": "gru", "step_emb_rows": "S", "decoder": "refine"},
    "v4_10": {"update": "gru", "step_emb_rows": "S", "stop": True},
}
AXES = ("update", "step_emb_rows", "scoring", "set_term", "cand_encoder", "decoder", "stop")


def preset_config(name: str, shot_num: int, axes: dict | None = None, **fields) -> "SelectorConfig":
    """The :class:`SelectorConfig` of preset ``name`` for ``shot_num``-step trajectories, with ``axes``
    (axis values that override the preset's) and other ``fields`` (hidden, dropout, ...) applied."""
    from leverjax.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"selector={name!r} is not one of: {', '.join(PRESETS)}")
    values = {a: getattr(SelectorConfig, a) for a in AXES}
    values.update(PRESETS[name])
    values.update(axes or {})
    if values["step_emb_rows"] == "S":
        values["step_emb_rows"] = shot_num
    size = max(1, shot_num) if values["set_term"] == "mmr" else SelectorConfig.div_lambda_size  # unused otherwise
    return SelectorConfig(**values, div_lambda_size=size, **fields).check()




class PointerSelector(nn.Module):
    """The pointer selector and its variants (see :class:`SelectorConfig`), batched over queries."""

    config: SelectorConfig

    def setup(self):
        cfg = self.config
        h = cfg.hidden
        self.input_proj = Dense(h, use_bias=False, kernel_init=input_proj_init)
        if cfg.cand_encoder == "self_attn":
            self.cand_encoder = CandidateEncoder(h, cfg.num_heads, cfg.dropout)
        self.cross_attn_layers = [
            MultiheadAttention(h, cfg.num_heads, cfg.attn_dropout, name=f"cross_attn_layers_{i}")
            for i in range(cfg.num_layers)
        ]
        self.attn_norms = [nn.LayerNorm(epsilon=1e-5, name=f"attn_norms_{i}") for i in range(cfg.num_layers)]
        self.dropout = Dropout(cfg.dropout)
        self.query_proj = Dense(h, use_bias=False, kernel_init=identity_plus_noise)
        self.cand_proj = Dense(h, use_bias=False, kernel_init=identity_plus_noise)
        update = cfg.state_update
        if update == "gate":
            self.query_update_gate = Dense(h, kernel_init=nn.initializers.xavier_uniform())
        elif update == "gru":
            self.decoder_gru = GRUCell(h)
        if cfg.step_emb_rows:
            self.step_emb = nn.Embed(cfg.step_emb_rows, h, embedding_init=normal_init(0.02))
        xavier = nn.initializers.xavier_uniform()
        if cfg.scoring == "additive":
            self.attn_Wq = Dense(h, kernel_init=xavier)
            self.attn_Wc = Dense(h, use_bias=False, kernel_init=xavier)
            self.attn_v = Dense(1, use_bias=False, kernel_init=scaled_init(xavier, 0.1))
        elif cfg.scoring == "bilinear":
            self.bilinear = Bilinear(h)
        if cfg.set_term == "mmr":
            self.div_lambda = self.param("div_lambda", lambda k, s: jnp.full(s, DIV_LAMBDA_INIT, jnp.float32),
                                         (cfg.div_lambda_size,))
        elif cfg.set_term == "coverage":
            self.topic_prototypes = self.param("topic_prototypes", normal_init(0.02), (cfg.num_topics, h))
            self.query_topic_head = Dense(cfg.num_topics, kernel_init=xavier)
            self.cover_lambda = self.param("cover_lambda", lambda k, s: jnp.full(s, LAMBDA_INIT, jnp.float32), ())
        elif cfg.set_term == "dpp":
            self.dpp_proj = Dense(cfg.dpp_rank, use_bias=False, kernel_init=xavier)
            self.dpp_lambda = self.param("dpp_lambda", lambda k, s: jnp.full(s, LAMBDA_INIT, jnp.float32), ())
        if cfg.decoder == "slots":
            self.slot_emb = nn.Embed(cfg.slot_rows, h, embedding_init=normal_init(0.02))
            self.slot_self_attn_layers = [MultiheadAttention(h, cfg.num_heads, cfg.attn_dropout,
                                                             name=f"slot_self_attn_layers_{i}")
                                          for i in range(cfg.num_slot_layers)]
            self.slot_norms = [nn.LayerNorm(epsilon=1e-5, name=f"slot_norms_{i}")
                               for i in range(cfg.num_slot_layers)]
            self.slot_cand_attn = MultiheadAttention(h, cfg.num_heads, cfg.attn_dropout)
            self.slot_cand_norm = nn.LayerNorm(epsilon=1e-5)
        elif cfg.decoder == "refine":
            if cfg.refine_type == "attn":
                self.refine_attn = MultiheadAttention(h, cfg.num_heads, cfg.attn_dropout)
                self.refine_norm = nn.LayerNorm(epsilon=1e-5)
                self.refine_score = torch_linear(1, h, "refine_score")  # exists in the original, never used
            else:
                self.refine_mlp_0 = torch_linear(h, 2 * h, "refine_mlp_0")
                self.refine_mlp_3 = torch_linear(1, h, "refine_mlp_3")
        if cfg.stop:
            self.stop_token = self.param("stop_token", normal_init(0.02), (1, h))

    # -- steps 1-5: once per query ---------------------------------------------------------------
    def encode(self, query_emb, cand_emb, cand_mask, *, deterministic: bool = True, projected: bool = False):
        """Encodes queries ``[B, d]`` and pools ``[B, K, d]`` into normalised states ``[B, H]``, ``[B, K, H]``.

        With ``projected=True`` the inputs are already ``input_proj`` outputs (``[B, H]``, ``[B, K, H]``):
        a frozen input projection can be applied once to the whole embedding table instead of to every
        pool again at every step.
        """
        q = query_emb if projected else self.input_proj(query_emb)
        c = cand_emb if projected else self.input_proj(cand_emb)
        if self.config.cand_encoder == "self_attn":
            c = self.cand_encoder(c, cand_mask, deterministic=deterministic)
        for attn, norm in zip(self.cross_attn_layers, self.attn_norms):
            q = norm(q + attn(q[:, None], c, cand_mask, deterministic=deterministic)[:, 0])  # one query token
        q = self.dropout(q, deterministic=deterministic)
        c = self.dropout(c, deterministic=deterministic)
        return l2_normalize(self.query_proj(q)), l2_normalize(self.cand_proj(c))

    # -- per-query quantities shared by every trajectory and step ---------------------------------
    def _context(self, query, cand, cand_mask, num_steps: int, deterministic: bool) -> dict:
        """Selectable vectors (the candidates, plus the STOP vector at index K), their mask and the
        per-query precomputations of the scoring head, the set term and the slot decoder."""
        cfg = self.config
        keys, mask = cand, cand_mask
        if cfg.stop:
            b = cand.shape[0]
            stop = jnp.broadcast_to(l2_normalize(self.stop_token)[None], (b, 1, cand.shape[-1]))
            keys = jnp.concatenate([cand, stop], axis=1)
            mask = jnp.concatenate([cand_mask, jnp.ones((b, 1), bool)], axis=1)
        ctx = {"query": query, "keys": keys, "mask": mask}
        if cfg.scoring == "additive":
            ctx["wc"] = self.attn_Wc(keys)  # [B, K', H]
        elif cfg.scoring == "bilinear":
            ctx["bw"] = jnp.einsum("bkj,ij->bki", keys, self.bilinear()[0])  # W c for every candidate
        if cfg.set_term == "coverage":
            proto = l2_normalize(self.topic_prototypes)
            ctx["topics"] = jax.nn.softmax(jnp.einsum("bkh,nh->bkn", keys, proto), axis=-1)  # [B, K', T]
            ctx["need"] = jax.nn.softmax(self.query_topic_head(query), axis=-1)  # [B, T]
        elif cfg.set_term == "dpp":
            ctx["dpp"] = l2_normalize(self.dpp_proj(keys))  # [B, K', r]
        if cfg.decoder == "slots":
            ctx["slots"] = self._slots(query, cand, cand_mask, num_steps, deterministic)
        return ctx

    def _slots(self, query, cand, cand_mask, num_steps: int, deterministic: bool):
        """The slot decoder's per-step query vectors ``[B, num_steps, H]`` (normalised)."""
        rows = jnp.minimum(jnp.arange(num_steps), self.config.slot_rows - 1)
        x = query[:, None, :] + self.slot_emb(rows)[None]
        for attn, norm in zip(self.slot_self_attn_layers, self.slot_norms):
            x = norm(x + attn(x, x, None, deterministic=deterministic))
        x = self.slot_cand_norm(x + self.slot_cand_attn(x, cand, cand_mask, deterministic=deterministic))
        return l2_normalize(x)

    def _init_state(self, ctx, m: int) -> dict:
        cfg = self.config
        query, keys = ctx["query"], ctx["keys"]
        b, k = keys.shape[:2]
        state = {"h": jnp.broadcast_to(query[:, None, :], (b, m, query.shape[-1])),
                 "chosen": jnp.zeros((b, m, k), bool)}
        if cfg.stop:
            state["ended"] = jnp.zeros((b, m), bool)
        if cfg.set_term == "mmr":
            state["red"] = jnp.full((b, m, k), -jnp.inf if cfg.mmr_reduction == "max" else 0.0, jnp.float32)
        elif cfg.set_term == "coverage":
            state["covered"] = jnp.zeros((b, m, cfg.num_topics), jnp.float32)
        elif cfg.set_term == "dpp":
            state["dpp_sim"] = jnp.full((b, m, k), -jnp.inf, jnp.float32)
        return state

    # -- step 6 ---------------------------------------------------------------------------------
    def _head(self, hq, ctx):
        """Scores ``[B, M, K']`` of step query vectors ``hq [B, M, H]`` (already divided by τ)."""
        cfg = self.config
        if cfg.scoring == "dot":
            return jnp.einsum("bkh,bmh->bmk", ctx["keys"], hq) / cfg.temperature
        if cfg.scoring == "additive":
            x = jnp.tanh(self.attn_Wq(hq)[:, :, None, :] + ctx["wc"][:, None, :, :])  # [B, M, K', H]
            return self.attn_v(x)[..., 0] / cfg.temperature
        return jnp.einsum("bki,bmi->bmk", ctx["bw"], hq) / cfg.temperature

    def _set_term(self, t: int, state, ctx):
        """The additive set-aware term of step ``t >= 1``, ``[B, M, K']`` (0 in the STOP column)."""
        cfg = self.config
        if cfg.set_term == "mmr":
            red = state["red"] if cfg.mmr_reduction == "max" else state["red"] / t
            term = -jax.nn.softplus(self.div_lambda[min(t, cfg.div_lambda_size - 1)]) * red
        elif cfg.set_term == "coverage":
            want = ctx["need"][:, None, :] * jnp.clip(1.0 - state["covered"], 0.0, 1.0)  # [B, M, T]
            term = jax.nn.softplus(self.cover_lambda) * jnp.einsum("bmn,bkn->bmk", want, ctx["topics"])
        else:
            gain = jnp.log(1e-6 + 1.0 - jnp.minimum(state["dpp_sim"] ** 2, 0.999))
            term = jax.nn.softplus(self.dpp_lambda) * gain
        if cfg.stop:
            term = term.at[..., -1].set(0.0)
        return term

    def _refine(self, base, hq, ctx, state, deterministic: bool):
        """Two-stage scoring: the ``top_m`` best of ``base`` (chosen and padded slots excluded) are
        re-scored; the rest get −100 (``refine_outside='fill'``) or keep their cheap logit."""
        cfg = self.config
        keys, mask = ctx["keys"], ctx["mask"]
        k = keys.shape[1]
        cheap = jnp.where(state["chosen"], CHOSEN_LOGIT, base)
        cheap = jnp.where(mask[:, None, :], cheap, PAD_LOGIT)
        top = jax.lax.top_k(jax.lax.stop_gradient(cheap), min(cfg.top_m, k))[1]  # [B, M, m]
        sub = jnp.take_along_axis(keys[:, None, :, :], top[..., None], axis=2)  # [B, M, m, H]
        sub_mask = jnp.take_along_axis(jnp.broadcast_to(mask[:, None, :], cheap.shape), top, axis=2)
        if cfg.refine_type == "attn":
            q = hq[:, :, None, :]
            r = self.refine_norm(self.refine_attn(q, sub, sub_mask, deterministic=deterministic) + q)
            scores = jnp.einsum("bmih,bmh->bmi", l2_normalize(sub), l2_normalize(r)[:, :, 0])
        else:
            x = jnp.concatenate([jnp.broadcast_to(hq[:, :, None, :], sub.shape), sub], axis=-1)
            x = self.dropout(jax.nn.relu(self.refine_mlp_0(x)), deterministic=deterministic)
            scores = self.refine_mlp_3(x)[..., 0]
        scores = scores / cfg.temperature
        out = jnp.full_like(base, CHOSEN_LOGIT) if cfg.refine_outside == "fill" else cheap
        slots = jnp.arange(k)
        for i in range(top.shape[-1]):
            out = jnp.where(slots == top[..., i:i + 1], scores[..., i:i + 1], out)
        return out

    def _logits(self, t: int, state, ctx, *, deterministic: bool = True):
        """Logits ``[B, M, K']`` of step ``t`` (K' = K, or K + 1 with STOP)."""
        cfg = self.config
        if cfg.decoder == "slots":
            hq = jnp.broadcast_to(ctx["slots"][:, None, t, :], state["h"].shape)
        elif cfg.step_emb_rows:
            hq = l2_normalize(state["h"] + self.step_emb(jnp.int32(min(t, cfg.step_emb_rows - 1))))
        else:
            hq = state["h"]
        base = self._head(hq, ctx)
        if cfg.set_term != "none" and t > 0:
            base = base + self._set_term(t, state, ctx)
        if cfg.decoder == "refine":
            base = self._refine(base, hq, ctx, state, deterministic)
        logits = jnp.where(state["chosen"], CHOSEN_LOGIT, base)
        if cfg.stop:
            stop_only = jnp.where(jnp.arange(logits.shape[-1]) == logits.shape[-1] - 1, 0.0, CHOSEN_LOGIT)
            logits = jnp.where(state["ended"][..., None], stop_only, logits)
        return jnp.where(ctx["mask"][:, None, :], logits, PAD_LOGIT)

    def step_logits(self, state, cand, cand_mask, chosen):
        """Logits ``[B, M, K]`` of one step of the plain pointer decoder for query states ``[B, M, H]``.

        ``chosen [B, M, K]`` marks candidates picked in earlier steps (logit -100); padded pool slots
        get :data:`PAD_LOGIT` so they can never be picked and take no probability mass.
        """
        logits = jnp.einsum("bkh,bmh->bmk", cand, state) / self.config.temperature
        logits = jnp.where(chosen, CHOSEN_LOGIT, logits)
        return jnp.where(cand_mask[:, None, :], logits, PAD_LOGIT)

    def advance(self, state, query, picked, first: bool = False):
        """Next query state after picking candidate vectors ``picked [B, M, H]`` (gate, GRU, mix or none).

        ``first``: ``state`` is still the query repeated over the M rows (the first step), so the state's
        share of the gate or GRU is computed once per query instead of once per trajectory.
        """
        update = self.config.state_update
        if update == "none":
            return jnp.broadcast_to(query[:, None, :], state.shape)
        rows = query[:, None, :] if first else state  # broadcasts to state
        if update == "gru":
            return l2_normalize(self.decoder_gru(picked, state, rows))
        if update == "mix":
            return l2_normalize(MIX_ALPHA * state + (1.0 - MIX_ALPHA) * picked)
        g = nn.sigmoid(self.query_update_gate([rows, picked]))
        return l2_normalize(g * state + (1.0 - g) * picked)

    def _update(self, state, ctx, label, first: bool = False):
        """The state after every row picked ``label [B, M]`` (a pool position, or K for STOP); ``first``:
        the state is the initial one (the query repeated over the rows)."""
        cfg = self.config
        keys = ctx["keys"]
        k = keys.shape[1]
        new = dict(state)
        picked = jnp.take_along_axis(keys[:, None, :, :], label[:, :, None, None], axis=2)[:, :, 0]
        hit = jax.nn.one_hot(label, k, dtype=bool)
        if cfg.set_term == "mmr":
            sim = jnp.einsum("bkh,bmh->bmk", keys, picked)
            new["red"] = jnp.maximum(state["red"], sim) if cfg.mmr_reduction == "max" else state["red"] + sim
        elif cfg.set_term == "coverage":
            got = jnp.take_along_axis(ctx["topics"][:, None], label[:, :, None, None], axis=2)[:, :, 0]
            new["covered"] = jnp.minimum(state["covered"] + got, 1.0)
        elif cfg.set_term == "dpp":
            f = ctx["dpp"]
            got = jnp.take_along_axis(f[:, None], label[:, :, None, None], axis=2)[:, :, 0]
            new["dpp_sim"] = jnp.maximum(state["dpp_sim"], jnp.einsum("bkr,bmr->bmk", f, got))
        h = self.advance(state["h"], ctx["query"], picked, first) if cfg.decoder != "slots" else state["h"]
        if cfg.stop:
            is_stop = label == k - 1
            hit = hit & ~is_stop[..., None]
            new["ended"] = state["ended"] | is_stop
            h = jnp.where(new["ended"][..., None], state["h"], h)
        new["h"] = h
        new["chosen"] = state["chosen"] | hit
        return new

    def score(self, query, cand, cand_mask, traj, *, deterministic: bool = True):
        """Teacher-forced per-step log-probabilities ``[B, M, S, K']`` of trajectories ``traj [B, M, S]``.

        ``query``/``cand`` come from :meth:`encode`; all M trajectories share that one encoding. Padded
        trajectory entries (−1) are scored as position 0; the losses mask them out. With STOP, K' = K + 1
        and label K is STOP.
        """
        b, m, s = traj.shape
        labels = jnp.maximum(traj, 0)
        ctx = self._context(query, cand, cand_mask, s, deterministic)
        state = self._init_state(ctx, m)
        out = []
        for t in range(s):
            logits = self._logits(t, state, ctx, deterministic=deterministic)
            out.append(jax.nn.log_softmax(logits, axis=-1))
            if t + 1 < s:
                state = self._update(state, ctx, labels[:, :, t], first=t == 0)
        return jnp.stack(out, axis=2)

    def decode(self, query, cand, cand_mask, num_steps: int, *, allow_stop: bool = True):
        """Greedy picks ``[B, num_steps]`` (pool positions; K = STOP) and their per-step log-probs.

        Any number of steps works, including more than the trained S; a step never repeats a pick
        while an unpicked valid candidate remains. ``allow_stop=False`` never picks STOP (its logit is
        removed before the argmax and the softmax).
        """
        cfg = self.config
        ctx = self._context(query, cand, cand_mask, num_steps, True)
        if cfg.stop and not allow_stop:
            ctx = {**ctx, "mask": ctx["mask"].at[:, -1].set(False)}
        state = self._init_state(ctx, 1)
        picks, logps = [], []
        for t in range(num_steps):
            logits = self._logits(t, state, ctx)[:, 0]
            pick = jnp.argmax(logits, axis=-1)
            picks.append(pick)
            logps.append(jnp.take_along_axis(jax.nn.log_softmax(logits, -1), pick[:, None], axis=-1)[:, 0])
            state = self._update(state, ctx, pick[:, None], first=t == 0)
        return jnp.stack(picks, axis=1), jnp.stack(logps, axis=1)

    def __call__(self, query_emb, cand_emb, cand_mask, traj, *, deterministic: bool = True, projected: bool = False):
        """Encode + score: per-step log-probs ``[B, M, S, K']`` (used for ``init`` and as a shortcut)."""
        query, cand = self.encode(query_emb, cand_emb, cand_mask, deterministic=deterministic, projected=projected)
        if self.is_initializing() and self.config.decoder == "refine" and self.config.refine_type == "attn":
            self.refine_score(query)  # creates the original's unused parameters
        return self.score(query, cand, cand_mask, traj, deterministic=deterministic)


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

    def greedy(self, params, query_emb, cand_emb, cand_mask, num_steps: int, allow_stop: bool = True):
        """Greedy picks ``[B, num_steps]`` (pool positions; K = STOP when the selector has one) in eval
        mode; ``allow_stop=False`` never picks STOP (a fixed number of demonstrations)."""
        def fn(module):
            q, c = module.encode(query_emb, cand_emb, cand_mask, deterministic=True)
            return module.decode(q, c, cand_mask, num_steps, allow_stop=allow_stop)[0]
        return nn.apply(fn, self.module)({"params": params})

    def score_and_decode(self, params, query_emb, cand_emb, cand_mask, traj, decode_steps, adaptive_steps: int = 0):
        """Eval mode, every output from one encoding of each query: per-step log-probs ``[B, M, S, K']`` of
        ``traj`` (as :meth:`step_log_probs`), ``{n: greedy picks [B, n]}`` for every ``n`` in ``decode_steps``
        (never STOP, as ``greedy(..., allow_stop=False)``) and, with ``adaptive_steps``, the
        ``adaptive_steps``-step greedy picks with STOP allowed (else ``None``)."""
        def fn(module):
            q, c = module.encode(query_emb, cand_emb, cand_mask, deterministic=True)
            step_logp = module.score(q, c, cand_mask, traj)
            picks = {n: module.decode(q, c, cand_mask, n, allow_stop=False)[0] for n in dict.fromkeys(decode_steps)}
            adaptive = module.decode(q, c, cand_mask, adaptive_steps)[0] if adaptive_steps else None
            return step_logp, picks, adaptive
        return nn.apply(fn, self.module)({"params": params})

    def logit_mask(self, cand_mask: jax.Array) -> jax.Array:
        """The mask of the logits' last axis for pools ``cand_mask [..., K]``: the pool's own mask, with a
        True STOP column appended when the selector has a STOP token."""
        if not self.config.stop:
            return cand_mask
        return jnp.concatenate([cand_mask, jnp.ones(cand_mask.shape[:-1] + (1,), bool)], axis=-1)
