"""A PyTorch transcription of the reference trainer's RCE and GRPO epochs at one query per step.

Written from the reference's description of its training loop (not its code): the network is
:class:`tests.torch_reference.TorchPointerSelector`; everything runs in float32 on the CPU.

* Reference log-probs: the starting model in eval mode scores every trajectory of every training query
  once, before RCE (the reference policy is never refreshed).
* RCE (one ``torch.optim.AdamW`` over all parameters): per query, τ falls linearly from τ₀ to τ₁ over
  the phase's steps (``step / (total − 1)``); the loss is Σ_m softmax(r/τ)_m · Σ_t CE_t, each
  trajectory encoding the query and pool on its own (the query repeated M times); backward;
  ``clip_grad_norm_(model.parameters(), 1)``; step.
* GRPO (a new AdamW over the parameters outside the frozen backbone): per query, the top-k trajectories
  by normalised reward with ``torch.topk`` when k < M (k = 3 in the first epoch, then 5), z-score
  advantages with the unbiased std floored at 0.1 and clipped to ±5, ratio ρ = exp(ℓ_new − ℓ_ref),
  PPO-clip loss plus β·mean(ρ − 1 − log ρ); backward, clipping, step; then β ×1.5 when KL > 0.1 and
  ÷1.5 when KL < 0.01, kept in [0.001, 10].

Per step it records what the reference accumulates for its epoch table (loss, PPO loss, KL, β after the
update, mean/unbiased std/max |·| of the advantages, mean ratio, τ). Queries come in a given order.

One quirk of the reference is optional (``stale_backbone_grads``): parameters frozen for GRPO keep the
gradient of the last RCE step, and ``clip_grad_norm_(model.parameters())`` counts (and rescales) it in
every GRPO step's norm. With ``False`` the frozen parameters' gradients are dropped before GRPO.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BACKBONE = ("input_proj", "query_proj", "cand_proj")


def temperature(step: int, total: int, start: float, end: float) -> float:
    if total <= 1:
        return end
    return start + (end - start) * min(1.0, max(0.0, step / (total - 1)))


class ReferenceLoop:
    """The reference trainer's epochs for ``model`` on ``queries`` (dicts of float32/int64 tensors:
    ``query [d]``, ``pool [K, d]``, ``traj [M, S]``, ``raw [M]``, ``norm [M]``), one query per step."""

    def __init__(self, model, queries, *, rce_lr=1e-4, grpo_lr=5e-5, weight_decay=0.01, tau_start=2.0,
                 tau_end=0.5, rce_rewards="raw", kl_beta=0.1, clip_eps=0.2, min_std=0.1, adv_clip=5.0,
                 top_k=(3, 5), freeze_backbone=True, clip_norm=1.0, stale_backbone_grads=True):
        self.model, self.queries = model, queries
        self.rce_lr, self.grpo_lr, self.weight_decay = rce_lr, grpo_lr, weight_decay
        self.tau_start, self.tau_end, self.rce_rewards = tau_start, tau_end, rce_rewards
        self.beta, self.clip_eps, self.min_std, self.adv_clip = kl_beta, clip_eps, min_std, adv_clip
        self.top_k, self.freeze_backbone, self.clip_norm = top_k, freeze_backbone, clip_norm
        self.stale_backbone_grads = stale_backbone_grads
        self.model.eval()
        with torch.no_grad():
            self.old_logp = [self.sequence_log_probs(q["query"], q["pool"], q["traj"]) for q in queries]

    # -- the network on one query, each trajectory encoding on its own ---------------------------
    def step_log_probs(self, query, pool, traj):
        m = traj.shape[0]
        return self.model(query.expand(m, -1), pool.expand(m, -1, -1), traj)  # [M, S, K]

    def sequence_log_probs(self, query, pool, traj):
        step = self.step_log_probs(query, pool, traj)
        return step.gather(2, traj[:, :, None])[..., 0].sum(-1)

    # -- RCE -------------------------------------------------------------------------------------
    def rce(self, orders):
        """RCE epochs, ``orders[e]`` the query order of epoch e; the per-step records."""
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.rce_lr, weight_decay=self.weight_decay)
        total = sum(len(o) for o in orders)
        records, step = [], 0
        self.model.train()
        for order in orders:
            for j in order:
                q = self.queries[j]
                tau = temperature(step, total, self.tau_start, self.tau_end)
                rewards = q["raw"] if self.rce_rewards == "raw" else q["norm"]
                opt.zero_grad()
                logits = self.step_log_probs(q["query"], q["pool"], q["traj"])
                ce = F.nll_loss(logits.reshape(-1, logits.shape[-1]), q["traj"].reshape(-1),
                                reduction="none").reshape(q["traj"].shape).sum(-1)
                loss = (torch.softmax(rewards / tau, -1) * ce).sum()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
                opt.step()
                records.append({"loss": loss.item(), "tau": tau})
                step += 1
        return records

    # -- GRPO ------------------------------------------------------------------------------------
    def grpo(self, orders):
        """GRPO epochs, ``orders[e]`` the query order of epoch e; the per-step records."""
        for name, p in self.model.named_parameters():
            frozen = self.freeze_backbone and any(b in name for b in BACKBONE)
            p.requires_grad_(not frozen)
            if frozen and not self.stale_backbone_grads:
                p.grad = None
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=self.grpo_lr, weight_decay=self.weight_decay)
        records = []
        self.model.train()
        for epoch, order in enumerate(orders):
            k = self.top_k[0] if epoch == 0 else self.top_k[1]
            for j in order:
                q = self.queries[j]
                traj, rewards, old = q["traj"], q["norm"], self.old_logp[j]
                if k < traj.shape[0]:
                    keep = torch.topk(rewards, k).indices
                    traj, rewards, old = traj[keep], rewards[keep], old[keep]
                opt.zero_grad()
                new = self.sequence_log_probs(q["query"], q["pool"], traj)
                std = torch.clamp(rewards.std(), min=self.min_std)
                adv = torch.clamp((rewards - rewards.mean()) / std, -self.adv_clip, self.adv_clip)
                log_ratio = new - old
                ratio = torch.exp(log_ratio)
                ppo = -torch.min(ratio * adv, torch.clamp(ratio, 1 - self.clip_eps, 1 + self.clip_eps) * adv).mean()
                kl = (ratio - 1 - log_ratio).mean()
                loss = ppo + self.beta * kl
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
                opt.step()
                kl_value = kl.item()
                if kl_value > 0.1:
                    self.beta *= 1.5
                elif kl_value < 0.01:
                    self.beta /= 1.5
                self.beta = max(0.001, min(10.0, self.beta))
                records.append({"loss": loss.item(), "ppo_loss": ppo.item(), "kl": kl_value, "beta": self.beta,
                                "adv_mean": adv.mean().item(), "adv_std": adv.std().item(),
                                "adv_max_abs": adv.abs().max().item(), "mean_ratio": ratio.mean().item(),
                                "clip_norm": norm.item(),
                                "kept": sorted(int(i) for i in (keep if k < q["traj"].shape[0]
                                                                else range(traj.shape[0])))})
        return records


def queries_from_dataset(ds, raw, norm, rows):
    """The per-query tensors of :class:`ReferenceLoop` for the dataset rows ``rows`` (padding removed:
    the reference sees each query's own pool and trajectories)."""
    out = []
    for i in rows:
        pool_valid = ds.pool_ids[i] >= 0
        traj_valid = ds.traj[i, :, 0] >= 0
        out.append({
            "query": torch.tensor(np.asarray(ds.emb[ds.query_ids[i]], np.float32)),
            "pool": torch.tensor(np.asarray(ds.emb[ds.pool_ids[i][pool_valid]], np.float32)),
            "traj": torch.tensor(np.asarray(ds.traj[i][traj_valid], np.int64)),
            "raw": torch.tensor(np.asarray(raw[i][traj_valid], np.float32)),
            "norm": torch.tensor(np.asarray(norm[i][traj_valid], np.float32)),
        })
    return out


def relative_gap(a, b) -> float:
    """max |a − b| / max(|b|, 1e-3) over the entries."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-3))) if a.size else 0.0
