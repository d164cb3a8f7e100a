"""A PyTorch transcription of the reference selector network (docs/reference.md §3), for the interop tests.

Written from the spec, independently of leverjax's Flax model: one query token attends over the
projected candidates with ``torch.nn.MultiheadAttention`` (``batch_first=True``), residual +
LayerNorm (eps 1e-5) per layer, dropout, ``query_proj``/``cand_proj``, L2 normalisation (eps
1e-12), cosine / temperature logits, logit −100 for candidates already chosen, and the V4-1 gate
``g = σ(W_g[s_t; c] + b_g)``, ``s_{t+1} = normalise(g·s_t + (1−g)·c)`` (or ``s_t = s_0`` in the
static variant). Padded pool slots are excluded from attention (``key_padding_mask``) and get logit
−1e9 in the selection steps.

Its parameters have exactly the names and shapes of the original's v3 selector, so
``load_state_dict(strict=True)`` of an exported checkpoint is the test that the original loads it.
Like the original, a square input projection (d == H) is ``nn.Identity`` and has no weight.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CHOSEN_LOGIT = -100.0
PAD_LOGIT = -1e9


class TorchPointerSelector(nn.Module):
    """The §3 network: ``forward`` gives teacher-forced per-step log-probs, ``greedy`` decodes."""

    def __init__(self, d_model: int, hidden_dim: int = 256, num_layers: int = 1, num_heads: int = 1,
                 dropout: float = 0.5, attn_dropout: float = 0.1, temperature: float = 0.1, gated: bool = True):
        super().__init__()
        self.d_model, self.hidden_dim = d_model, hidden_dim
        self.num_layers, self.temperature, self.gated = num_layers, temperature, gated
        self.input_proj = nn.Linear(d_model, hidden_dim, bias=False) if d_model != hidden_dim else nn.Identity()
        self.cross_attn_layers = nn.ModuleList([
            nn.MultiheadAttention(hidden_dim, num_heads, dropout=attn_dropout, batch_first=True)
            for _ in range(num_layers)])
        self.attn_norms = nn.ModuleList([nn.LayerNorm(hidden_dim, eps=1e-5) for _ in range(num_layers)])
        self.query_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.cand_proj = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        if gated:
            self.query_update_gate = nn.Linear(2 * hidden_dim, hidden_dim)

    def encode(self, query_emb, cand_emb, cand_mask=None):
        """Steps 1–5: normalised query ``[B, H]`` and candidates ``[B, K, H]``."""
        b, k, _ = cand_emb.shape
        if cand_mask is None:
            cand_mask = torch.ones(b, k, dtype=torch.bool)
        q = self.input_proj(query_emb).unsqueeze(1)  # [B, 1, H]
        c = self.input_proj(cand_emb)  # [B, K, H]
        for attn, norm in zip(self.cross_attn_layers, self.attn_norms):
            out, _ = attn(q, c, c, key_padding_mask=~cand_mask, need_weights=False)
            q = norm(q + out)
        q = self.dropout(q.squeeze(1))
        c = self.dropout(c)
        return F.normalize(self.query_proj(q), dim=-1, eps=1e-12), F.normalize(self.cand_proj(c), dim=-1, eps=1e-12)

    def _logits(self, state, cand, cand_mask, chosen):
        logits = torch.einsum("bkh,bh->bk", cand, state) / self.temperature
        logits = logits.masked_fill(chosen, CHOSEN_LOGIT)
        return logits.masked_fill(~cand_mask, PAD_LOGIT)

    def _advance(self, state, query, picked):
        if not self.gated:
            return query
        g = torch.sigmoid(self.query_update_gate(torch.cat([state, picked], dim=-1)))
        return F.normalize(g * state + (1.0 - g) * picked, dim=-1, eps=1e-12)

    def forward(self, query_emb, cand_emb, labels, cand_mask=None):
        """Teacher-forced per-step log-probs ``[B, S, K]`` of label sequences ``[B, S]``."""
        b, k, _ = cand_emb.shape
        if cand_mask is None:
            cand_mask = torch.ones(b, k, dtype=torch.bool)
        query, cand = self.encode(query_emb, cand_emb, cand_mask)
        state, chosen = query, torch.zeros(b, k, dtype=torch.bool)
        out = []
        for t in range(labels.shape[1]):
            out.append(F.log_softmax(self._logits(state, cand, cand_mask, chosen), dim=-1))
            label = labels[:, t]
            picked = cand[torch.arange(b), label]
            state = self._advance(state, query, picked)
            chosen = chosen.scatter(1, label[:, None], True)
        return torch.stack(out, dim=1)

    def sequence_log_prob(self, query_emb, cand_emb, labels, cand_mask=None):
        """Σ_t log p_t[label_t]: ``[B]``."""
        step = self.forward(query_emb, cand_emb, labels, cand_mask)
        return step.gather(2, labels[:, :, None])[..., 0].sum(-1)

    def greedy(self, query_emb, cand_emb, num_steps: int, cand_mask=None):
        """Greedy picks ``[B, num_steps]`` (pool positions)."""
        b, k, _ = cand_emb.shape
        if cand_mask is None:
            cand_mask = torch.ones(b, k, dtype=torch.bool)
        query, cand = self.encode(query_emb, cand_emb, cand_mask)
        state, chosen = query, torch.zeros(b, k, dtype=torch.bool)
        picks = []
        for _ in range(num_steps):
            pick = self._logits(state, cand, cand_mask, chosen).argmax(-1)
            picks.append(pick)
            state = self._advance(state, query, cand[torch.arange(b), pick])
            chosen = chosen.scatter(1, pick[:, None], True)
        return torch.stack(picks, dim=1)


def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Gives every parameter random N(0, scale²) values (LayerNorm scales around 1), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * scale
            p.copy_(1.0 + noise if name.startswith("attn_norms.") and name.endswith("weight") else noise)
    return module
