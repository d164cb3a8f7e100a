"""A plain NumPy float64 transcription of docs/reference.md §3-§4, written from the spec text.

Deliberately NOT vectorised like leverjax: one query at a time, one trajectory at a time, one step at
a time, explicit loops. It shares no code with leverjax; it only reads the Flax parameter pytree
(Dense kernels are ``[in, out]``; ``in_proj_weight`` is torch layout ``[3H, H]``, rows q, k, v).

Conventions: a pool is ``C [K, d]`` with a boolean ``valid [K]`` (padded slots are excluded from
everything); a trajectory is a list of S pool positions; a padded trajectory (all −1) is skipped by the
callers. Log-probabilities are returned for the valid slots only, padded slots as −inf.
"""
from __future__ import annotations

import math

import numpy as np

CHOSEN_LOGIT = -100.0  # docs/reference.md §3 step 6: a finite logit for already-chosen candidates


def to_float64(params):
    """The Flax params pytree (nested dicts of arrays) as nested dicts of float64 NumPy arrays."""
    if isinstance(params, dict) or hasattr(params, "items"):
        return {k: to_float64(v) for k, v in params.items()}
    return np.asarray(params, dtype=np.float64)


# -- §3 the network --------------------------------------------------------------------------------

def l2_normalize(x, eps=1e-12):
    return x / max(math.sqrt(float(np.dot(x, x))), eps)


def layer_norm(x, scale, bias, eps=1e-5):
    mu = x.mean()
    var = ((x - mu) ** 2).mean()  # biased variance, like torch.nn.LayerNorm
    return (x - mu) / math.sqrt(var + eps) * scale + bias


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x):
    z = x - np.max(x)
    e = np.exp(z)
    return e / e.sum()


def multihead_attention(q, keys, layer, num_heads):
    """torch.nn.MultiheadAttention (eval mode) with one query token ``q [H]`` over ``keys [n, H]``."""
    w = layer["in_proj_weight"]  # [3H, H], y = x @ W.T + b
    b = layer["in_proj_bias"]
    h = q.shape[0]
    dh = h // num_heads
    qi = w[:h] @ q + b[:h]
    ki = np.stack([w[h:2 * h] @ k + b[h:2 * h] for k in keys])
    vi = np.stack([w[2 * h:] @ k + b[2 * h:] for k in keys])
    heads = []
    for j in range(num_heads):
        sl = slice(j * dh, (j + 1) * dh)
        scores = np.array([np.dot(qi[sl], ki[n, sl]) / math.sqrt(dh) for n in range(len(keys))])
        a = softmax(scores)
        heads.append(sum(a[n] * vi[n, sl] for n in range(len(keys))))
    out = np.concatenate(heads)
    return out @ layer["out_proj"]["kernel"] + layer["out_proj"]["bias"]


def encode(p, q, C, valid, *, num_layers, num_heads):
    """Steps 1-5 (eval mode, no dropout): normalised query state ``s0 [H]`` and candidates ``[K, H]``.

    Padded slots are projected too (their rows are never used) but excluded from the attention.
    """
    w_in = p["input_proj"]["kernel"]
    qh = q @ w_in
    ch = np.stack([c @ w_in for c in C])
    keys = ch[valid]
    for i in range(num_layers):
        att = multihead_attention(qh, keys, p[f"cross_attn_layers_{i}"], num_heads)
        ln = p[f"attn_norms_{i}"]
        qh = layer_norm(qh + att, ln["scale"], ln["bias"])
    s0 = l2_normalize(qh @ p["query_proj"]["kernel"])
    cn = np.stack([l2_normalize(c @ p["cand_proj"]["kernel"]) for c in ch])
    return s0, cn


def step_logits(s, cn, valid, chosen, temperature):
    """Logits ``[K]`` of one step: cosine / temperature, −100 if chosen earlier, −inf if padded."""
    out = np.full(len(cn), -np.inf)
    for k in range(len(cn)):
        if not valid[k]:
            continue
        out[k] = CHOSEN_LOGIT if k in chosen else float(np.dot(cn[k], s)) / temperature
    return out


def log_softmax(logits):
    """Log-softmax over the finite entries; −inf entries stay −inf (zero probability)."""
    finite = np.isfinite(logits)
    m = logits[finite].max()
    lse = m + math.log(np.exp(logits[finite] - m).sum())
    return np.where(finite, logits - lse, -np.inf)


def next_state(p, s, c, s0, gated):
    """The V4-1 gate: g = σ(W_g[s; c] + b); s' = normalise(g·s + (1 − g)·c). Static variant: s0."""
    if not gated:
        return s0
    gate = p["query_update_gate"]
    g = sigmoid(np.concatenate([s, c]) @ gate["kernel"] + gate["bias"])
    return l2_normalize(g * s + (1.0 - g) * c)


def step_log_probs(p, q, C, valid, traj, *, num_layers, num_heads, gated, temperature=0.1):
    """Teacher-forced per-step log-probs ``[S, K]`` of ONE trajectory ``traj [S]`` (encodes on its own)."""
    s0, cn = encode(p, q, C, valid, num_layers=num_layers, num_heads=num_heads)
    s, chosen, out = s0, set(), []
    for t, label in enumerate(traj):
        out.append(log_softmax(step_logits(s, cn, valid, chosen, temperature)))
        s = next_state(p, s, cn[label], s0, gated)
        chosen.add(int(label))
    return np.stack(out)


def trajectory_log_prob(step_logp, traj):
    """Σ_t log p_t[label_t] of one trajectory."""
    return float(sum(step_logp[t, label] for t, label in enumerate(traj)))


def greedy(p, q, C, valid, num_steps, *, num_layers, num_heads, gated, temperature=0.1):
    """Greedy picks of one query (argmax, first index on ties) and the smallest top-1/top-2 logit margin."""
    s0, cn = encode(p, q, C, valid, num_layers=num_layers, num_heads=num_heads)
    s, chosen, picks, margin = s0, set(), [], np.inf
    for _ in range(num_steps):
        logits = step_logits(s, cn, valid, chosen, temperature)
        pick = int(np.argmax(logits))
        top2 = np.sort(logits[np.isfinite(logits)])[-2:]
        if len(top2) == 2:
            margin = min(margin, float(top2[1] - top2[0]) if top2[1] > CHOSEN_LOGIT else np.inf)
        picks.append(pick)
        s = next_state(p, s, cn[pick], s0, gated)
        chosen.add(pick)
    return picks, margin


# -- §4 losses -------------------------------------------------------------------------------------

def cross_entropy(logp, label, valid, label_smoothing):
    """torch CE with label smoothing over the valid classes: (1 − ε)·nll + ε·mean_k(−log p_k)."""
    nll = -logp[label]
    smooth = -np.mean([logp[k] for k in range(len(logp)) if valid[k]])
    return (1.0 - label_smoothing) * nll + label_smoothing * smooth


def sft_loss(step_logps, labels, valids, label_smoothing):
    """Mean over queries and steps of the CE; ``step_logps`` a list of ``[S, K]``, one per query."""
    ces = []
    for logp, lab, valid in zip(step_logps, labels, valids):
        for t in range(len(lab)):
            ces.append(cross_entropy(logp[t], lab[t], valid, label_smoothing))
    return float(np.mean(ces))


def rce_temperature(step, total, tau0=2.0, tau1=0.5):
    if total <= 1:  # a one-step phase uses the end temperature, as the reference's schedule does
        return tau1
    frac = min(max(step / (total - 1), 0.0), 1.0)
    return tau0 + (tau1 - tau0) * frac


def rce_query_loss(step_logps, trajs, rewards, valid, tau, label_smoothing):
    """One query: Σ_m softmax(r/τ)_m · Σ_t CE_t over its (unpadded) trajectories."""
    w = softmax(np.asarray(rewards, np.float64) / tau)
    total = 0.0
    for wm, logp, traj in zip(w, step_logps, trajs):
        ce = sum(cross_entropy(logp[t], traj[t], valid, label_smoothing) for t in range(len(traj)))
        total += wm * ce
    return total


def kl_term(log_ratio, estimator):
    rho = math.exp(log_ratio)
    if estimator == "reference":
        return rho - 1.0 - log_ratio
    if estimator == "k3":
        return 1.0 / rho - 1.0 + log_ratio
    if estimator == "none":
        return 0.0
    raise ValueError(estimator)


def grpo_query(logp_new, logp_ref, adv, *, eps, eps_high, beta, estimator):
    """One query group: (loss, ppo, kl, mean ratio, clip fraction) with plain loops."""
    ppo = kl = ratio_sum = clipped = 0.0
    n = len(logp_new)
    for ln, lr, a in zip(logp_new, logp_ref, adv):
        rho = math.exp(ln - lr)
        ppo += -min(rho * a, min(max(rho, 1.0 - eps), 1.0 + eps_high) * a)
        kl += kl_term(ln - lr, estimator)
        ratio_sum += rho
        clipped += 1.0 if (rho < 1.0 - eps or rho > 1.0 + eps_high) else 0.0
    ppo, kl = ppo / n, kl / n
    return ppo + beta * kl, ppo, kl, ratio_sum / n, clipped / n


def grpo_loss(groups, *, eps=0.2, eps_high=None, beta=0.1, estimator="reference"):
    """Mean over query groups of :func:`grpo_query`; ``groups`` a list of (logp_new, logp_ref, adv)."""
    eps_high = eps if eps_high is None else eps_high
    parts = [grpo_query(*g, eps=eps, eps_high=eps_high, beta=beta, estimator=estimator) for g in groups]
    return tuple(float(np.mean([p[i] for p in parts])) for i in range(5))


def advantages(rewards, method, *, min_std=0.1, clip=5.0):
    """Advantages of ONE group of valid rewards (a plain list), docs/reference.md §4 and the method table."""
    r = [float(x) for x in rewards]
    n = len(r)
    if n == 0:
        return []
    mean = sum(r) / n
    if method == "zscore":
        if n == 1:
            out = [0.0]
        else:
            std = math.sqrt(sum((x - mean) ** 2 for x in r) / (n - 1))
            denom = max(std, min_std)
            out = [0.0 if denom == 0.0 else (x - mean) / denom for x in r]
    elif method == "rank":
        out = []
        for i, x in enumerate(r):
            rank = sum(1 for j, y in enumerate(r) if y > x or (y == x and j < i))
            out.append(0.0 if n == 1 else 1.0 - 2.0 * rank / (n - 1))
    elif method == "mean":
        out = [x - mean for x in r]
    elif method == "rloo":
        out = [0.0 if n == 1 else x - (sum(r) - x) / (n - 1) for x in r]
    elif method == "none":
        out = list(r)
    else:
        raise ValueError(method)
    return [min(max(a, -clip), clip) for a in out]


def top_k(rewards, k):
    """Indices of the k highest rewards of one group (ties: lower index first)."""
    order = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
    return sorted(order[:k])


def adapt_beta(beta, kl, kl_high=0.1, kl_low=0.01, factor=1.5, beta_min=1e-3, beta_max=10.0):
    if kl > kl_high:
        beta *= factor
    elif kl < kl_low:
        beta /= factor
    return min(max(beta, beta_min), beta_max)
