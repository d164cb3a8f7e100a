"""A PyTorch transcription of the original's selector variants V4-2 … V4-10, for the variant tests.

Written from the description of each variant, independently of leverjax's Flax model, with torch's
own building blocks (``nn.GRUCell``, ``nn.Embedding``, ``nn.Bilinear``, ``nn.MultiheadAttention``,
a pre-LN ``nn.TransformerEncoderLayer``), so a wrong gate order, head layout or parameter mapping
shows up as a numeric difference. One class covers every variant; which modules exist follows the
original's constructor for that variant, and the parameter names are the original's state-dict keys.

Like ``torch_reference.py`` it works on ragged pools: padded candidates are excluded as attention keys
(``key_padding_mask``) and get logit −1e9 in every selection step. Everything runs in eval mode (no
dropout); beams are scored one row at a time (the original repeats a query per beam).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CHOSEN = -100.0
PAD = -1e9

# variant -> its pieces (update rule, step-embedding rows, scoring head, set term, candidate encoder,
# decoder, STOP token); "S" = the shot number.
VARIANTS = {
    "v4_1": dict(update="gate"),
    "v2": dict(update="none"),
    "v4_2": dict(update="gru", rows="S"),
    "v4_3": dict(update="gru", rows="S", term="mmr"),
    "v4_4": dict(update="gru", rows="S", term="mmr", encoder=True),
    "v4_5_additive": dict(update="gru", rows="S", head="additive"),
    "v4_5_bilinear": dict(update="gru", rows="S", head="bilinear"),
    "v4_6": dict(update="gru", rows=8, term="coverage"),
    "v4_7": dict(update="gru", rows=8, term="dpp"),
    "v4_8": dict(update="none", decoder="slots"),
    "v4_9": dict(update="gru", rows="S", decoder="refine"),
    "v4_10": dict(update="gru", rows="S", stop=True),
}


def unit(x):
    return F.normalize(x, p=2, dim=-1, eps=1e-12)


class TorchVariant(nn.Module):
    def __init__(self, variant: str, d_model: int, hidden: int, shot_num: int, num_heads: int = 1,
                 temperature: float = 0.1, mmr_reduction: str = "max", top_m: int = 8, refine_type: str = "attn"):
        super().__init__()
        spec = dict(update="gate", rows=0, head="dot", term="none", encoder=False, decoder="pointer", stop=False)
        spec.update(VARIANTS[variant])
        self.spec, self.h, self.tau, self.S = spec, hidden, temperature, shot_num
        self.mmr_reduction, self.top_m, self.refine_type = mmr_reduction, top_m, refine_type
        h = hidden
        mha = lambda: nn.MultiheadAttention(h, num_heads, dropout=0.0, batch_first=True)  # noqa: E731
        self.input_proj = nn.Linear(d_model, h, bias=False) if d_model != h else nn.Identity()
        if spec["encoder"]:
            layer = nn.TransformerEncoderLayer(h, num_heads, dim_feedforward=4 * h, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.cand_encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.cross_attn_layers = nn.ModuleList([mha()])
        self.attn_norms = nn.ModuleList([nn.LayerNorm(h)])
        self.query_proj = nn.Linear(h, h, bias=False)
        self.cand_proj = nn.Linear(h, h, bias=False)
        if spec["update"] == "gate":
            self.query_update_gate = nn.Linear(2 * h, h)
        elif spec["update"] == "gru":
            self.decoder_gru = nn.GRUCell(h, h)
        rows = shot_num if spec["rows"] == "S" else spec["rows"]
        self.rows = rows
        if rows:
            self.step_emb = nn.Embedding(rows, h)
        if spec["head"] == "additive":
            self.attn_Wq = nn.Linear(h, h)
            self.attn_Wc = nn.Linear(h, h, bias=False)
            self.attn_v = nn.Linear(h, 1, bias=False)
        elif spec["head"] == "bilinear":
            self.bilinear = nn.Bilinear(h, h, 1, bias=False)
        if spec["term"] == "mmr":
            self.div_lambda = nn.Parameter(torch.full((shot_num,), 0.1))
        elif spec["term"] == "coverage":
            self.topic_prototypes = nn.Parameter(torch.randn(16, h) * 0.02)
            self.query_topic_head = nn.Linear(h, 16)
            self.cover_lambda = nn.Parameter(torch.tensor(-2.0))
        elif spec["term"] == "dpp":
            self.dpp_proj = nn.Linear(h, 32, bias=False)
            self.dpp_lambda = nn.Parameter(torch.tensor(-2.0))
        if spec["decoder"] == "slots":
            self.slot_emb = nn.Embedding(8, h)
            self.slot_self_attn_layers = nn.ModuleList([mha(), mha()])
            self.slot_norms = nn.ModuleList([nn.LayerNorm(h), nn.LayerNorm(h)])
            self.slot_cand_attn = mha()
            self.slot_cand_norm = nn.LayerNorm(h)
        elif spec["decoder"] == "refine":
            if refine_type == "attn":
                self.refine_attn = mha()
                self.refine_norm = nn.LayerNorm(h)
                self.refine_score = nn.Linear(h, 1)
            else:
                self.refine_mlp = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Dropout(0.0), nn.Linear(h, 1))
        if spec["stop"]:
            self.stop_token = nn.Parameter(torch.randn(1, h) * 0.02)

    # -- the encoder, shared by every variant ----------------------------------------------------
    def encode(self, q, c, valid):
        q = self.input_proj(q)[:, None, :]
        c = self.input_proj(c)
        if self.spec["encoder"]:
            c = self.cand_encoder(c, src_key_padding_mask=~valid)
        out, _ = self.cross_attn_layers[0](q, c, c, key_padding_mask=~valid, need_weights=False)
        q = self.attn_norms[0](q + out)[:, 0]
        return unit(self.query_proj(q)), unit(self.cand_proj(c))

    # -- one row (one query, one trajectory) at a time -------------------------------------------
    def _head(self, hq, cands):
        if self.spec["head"] == "additive":
            return self.attn_v(torch.tanh(self.attn_Wq(hq)[None, :] + self.attn_Wc(cands)))[:, 0] / self.tau
        if self.spec["head"] == "bilinear":
            return self.bilinear(hq[None, :].expand(cands.shape[0], -1), cands)[:, 0] / self.tau
        return cands @ hq / self.tau

    def _slots(self, q, cands, valid, steps):
        idx = torch.clamp(torch.arange(steps), max=7)
        x = (q[None, :] + self.slot_emb(idx))[None]  # [1, T, H]
        for attn, norm in zip(self.slot_self_attn_layers, self.slot_norms):
            x = norm(x + attn(x, x, x, need_weights=False)[0])
        x = self.slot_cand_norm(x + self.slot_cand_attn(x, cands[None], cands[None],
                                                         key_padding_mask=~valid[None], need_weights=False)[0])
        return unit(x[0])

    def _refine(self, base, hq, cands, valid, chosen):
        cheap = base.masked_fill(chosen, CHOSEN).masked_fill(~valid, PAD)
        m = min(self.top_m, cands.shape[0])
        top = torch.topk(cheap, m).indices
        sub = cands[top]
        if self.refine_type == "attn":
            qq = hq[None, None, :]
            out = self.refine_attn(qq, sub[None], sub[None], key_padding_mask=~valid[top][None], need_weights=False)[0]
            r = unit(self.refine_norm(out + qq))[0, 0]
            scores = unit(sub) @ r
        else:
            scores = self.refine_mlp(torch.cat([hq[None, :].expand(m, -1), sub], -1))[:, 0]
        logits = torch.full_like(base, CHOSEN)
        logits[top] = scores / self.tau
        return logits

    def run_row(self, q, cands, valid, labels=None, steps=None, allow_stop=True):
        """Logits of every step ``[T, K']`` for one query (teacher-forced by ``labels`` or greedy)."""
        spec = self.spec
        k = cands.shape[0]
        if spec["stop"]:
            cands = torch.cat([cands, unit(self.stop_token)], 0)
            valid = torch.cat([valid, torch.tensor([allow_stop])])
        steps = len(labels) if labels is not None else steps
        h, h0 = q, q
        chosen = torch.zeros(cands.shape[0], dtype=torch.bool)
        ended = False
        picked_vecs, covered = [], torch.zeros(16)
        slots = self._slots(q, cands[:k], valid[:k], steps) if spec["decoder"] == "slots" else None
        if spec["term"] == "coverage":
            topics = torch.softmax(cands @ unit(self.topic_prototypes).T, -1)
            need = torch.softmax(self.query_topic_head(h0), -1)
        if spec["term"] == "dpp":
            feats = unit(self.dpp_proj(cands))
        out, picks = [], []
        for t in range(steps):
            if slots is not None:
                hq = slots[t]
            elif self.rows:
                hq = unit(h + self.step_emb.weight[min(t, self.rows - 1)])
            else:
                hq = h
            s = self._head(hq, cands)
            if t > 0 and spec["term"] == "mmr":
                sims = torch.stack([cands @ v for v in picked_vecs], -1)
                red = sims.max(-1).values if self.mmr_reduction == "max" else sims.mean(-1)
                s = s - F.softplus(self.div_lambda[min(t, self.S - 1)]) * red
            elif t > 0 and spec["term"] == "coverage":
                s = s + F.softplus(self.cover_lambda) * (topics @ (need * (1 - covered).clamp(0, 1)))
            elif t > 0 and spec["term"] == "dpp":
                sim = torch.stack([feats @ feats[a] for a in picks], -1).max(-1).values
                s = s + F.softplus(self.dpp_lambda) * torch.log(1e-6 + 1.0 - sim.pow(2).clamp(max=0.999))
            if spec["decoder"] == "refine":
                s = self._refine(s, hq, cands, valid, chosen)
            s = s.masked_fill(chosen, CHOSEN)
            if spec["stop"] and ended:
                s = torch.full_like(s, CHOSEN)
                s[-1] = 0.0
            s = s.masked_fill(~valid, PAD)
            out.append(s)
            a = int(labels[t]) if labels is not None else int(s.argmax())
            picks.append(a)
            c = cands[a]
            is_stop = spec["stop"] and a == k
            if not is_stop:
                chosen = chosen.clone()
                chosen[a] = True
            picked_vecs.append(c)
            if spec["term"] == "coverage":
                covered = torch.clamp(covered + topics[a], max=1.0)
            ended = ended or is_stop
            if ended or spec["decoder"] == "slots":
                continue
            if spec["update"] == "gru":
                h = unit(self.decoder_gru(c[None], h[None])[0])
            elif spec["update"] == "gate":
                g = torch.sigmoid(self.query_update_gate(torch.cat([h, c])))
                h = unit(g * h + (1 - g) * c)
        return torch.stack(out), picks

    @torch.no_grad()
    def log_probs(self, q, c, valid, traj):
        """Per-step log-probs ``[B, M, S, K']`` of trajectories ``traj [B, M, S]``."""
        qn, cn = self.encode(q, c, valid)
        return torch.stack([torch.stack([F.log_softmax(self.run_row(qn[b], cn[b], valid[b], traj[b, m])[0], -1)
                                         for m in range(traj.shape[1])]) for b in range(traj.shape[0])])

    @torch.no_grad()
    def greedy(self, q, c, valid, steps, allow_stop=True):
        qn, cn = self.encode(q, c, valid)
        return [self.run_row(qn[b], cn[b], valid[b], steps=steps, allow_stop=allow_stop)[1]
                for b in range(q.shape[0])]


def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
    """Random N(0, scale²) values for every parameter (LayerNorm scales around 1), in place."""
    gen = torch.Generator().manual_seed(seed)
    norms = {n for n, m in module.named_modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * scale
            is_scale = name.endswith(".weight") and name.rsplit(".", 1)[0] in norms
            p.copy_(1.0 + noise if is_scale else noise)
    return module
