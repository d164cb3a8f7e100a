"""The selector network's own properties: padding, encode-once, dropout, gradient flow, and a learning probe."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from leverjax.core.layers import Dropout, MultiheadAttention, l2_normalize, matmul
from leverjax.core.losses import rce_loss, sft_loss
from leverjax.core.model import PointerSelector, Selector, SelectorConfig, init_params
from leverjax.core.optim import BACKBONE, make_optimizer

D, K, M, S, B = 24, 8, 5, 2, 3
CONFIG = SelectorConfig(hidden=16, num_layers=1, num_heads=2, dropout=0.5, attn_dropout=0.1)
SEL = Selector(CONFIG)


def _perturb(params, key, scale=0.1):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def params():
    # init + noise (so no identity/zero init hides a bug), jitted: one compile instead of many eager ops
    return jax.jit(lambda k: _perturb(init_params(CONFIG, k, D), jax.random.fold_in(k, 1)))(jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def batch():
    """Ragged pools (3, 5 and 8 valid slots; garbage in padded ones), trajectories inside each pool."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(B, D)).astype(np.float32)
    C = rng.normal(size=(B, K, D)).astype(np.float32)
    sizes = [3, 5, K]
    mask = np.arange(K)[None, :] < np.array(sizes)[:, None]
    C[~mask] = 1e3 * rng.normal(size=(int((~mask).sum()), D))
    traj = np.stack([np.stack([rng.choice(n, size=S, replace=False) for _ in range(M)]) for n in sizes])
    rewards = rng.choice([0.0, 0.3, 0.6, 1.0], size=(B, M)).astype(np.float32)
    return dict(q=q, C=C, mask=mask, traj=traj.astype(np.int32), traj_mask=np.ones((B, M), bool), rewards=rewards)


step_log_probs = jax.jit(SEL.step_log_probs, static_argnames="deterministic")


# -- padding ---------------------------------------------------------------------------------------

def test_padded_slots_never_chosen_and_zero_probability(params, batch):
    greedy = jax.jit(SEL.greedy, static_argnames="num_steps")
    picks = np.asarray(greedy(params, batch["q"], batch["C"], batch["mask"], num_steps=K))  # > pool size for 2 rows
    for b in range(B):
        assert batch["mask"][b, picks[b]].all(), f"query {b} picked a padded slot: {picks[b]}"
        n = int(batch["mask"][b].sum())
        assert sorted(picks[b, :n]) == list(range(n))  # every valid slot once before any repeat
    logp = np.asarray(step_log_probs(params, batch["q"], batch["C"], batch["mask"], batch["traj"]))
    probs = np.exp(logp)
    pad = ~batch["mask"][:, None, None, :].repeat(M, 1).repeat(S, 2)
    assert np.all(probs[pad] == 0.0)  # exactly zero, not tiny
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_padded_slot_contents_do_not_matter(params, batch):
    C2 = batch["C"].copy()
    C2[~batch["mask"]] = -C2[~batch["mask"]] + 7.0
    a = step_log_probs(params, batch["q"], batch["C"], batch["mask"], batch["traj"])
    b = step_log_probs(params, batch["q"], C2, batch["mask"], batch["traj"])
    valid = np.broadcast_to(batch["mask"][:, None, None, :], a.shape)
    np.testing.assert_array_equal(np.asarray(a)[valid], np.asarray(b)[valid])


# -- encode once per query -------------------------------------------------------------------------

def test_encode_once_equals_repeated_pool(params, batch):
    """Scoring M trajectories from one encoding = the reference's repeat-the-pool-M-times computation."""
    once = np.asarray(step_log_probs(params, batch["q"], batch["C"], batch["mask"], batch["traj"]))
    # the reference layout: a batch of B·M rows, the query and its pool repeated for every trajectory
    rep = lambda x: np.repeat(x, M, axis=0)
    q_rep, c_rep, m_rep = rep(batch["q"]), rep(batch["C"]), rep(batch["mask"])
    enc_q, enc_c = jax.jit(SEL.encode)(params, q_rep, c_rep, m_rep)
    enc_q1, enc_c1 = jax.jit(SEL.encode)(params, batch["q"], batch["C"], batch["mask"])
    np.testing.assert_allclose(enc_q, rep(np.asarray(enc_q1)), rtol=1e-6, atol=1e-7)
    score = jax.jit(lambda p, qe, ce, m, t: PointerSelector(CONFIG).apply({"params": p}, qe, ce, m, t,
                                                                          method=PointerSelector.score))
    naive = np.asarray(score(params, enc_q, enc_c, m_rep, batch["traj"].reshape(B * M, 1, S)))
    naive = naive.reshape(B, M, S, K)
    valid = np.broadcast_to(batch["mask"][:, None, None, :], once.shape)
    np.testing.assert_allclose(once[valid], naive[valid], rtol=1e-6, atol=1e-6)
    # and the all-in-one call on the repeated batch agrees as well
    full = np.asarray(step_log_probs(params, q_rep, c_rep, m_rep, batch["traj"].reshape(B * M, 1, S)))
    np.testing.assert_allclose(once[valid], full.reshape(B, M, S, K)[valid], rtol=1e-6, atol=1e-6)


# -- dropout ---------------------------------------------------------------------------------------

def test_dropout_only_in_training_mode(params, batch):
    @jax.jit  # all modes in one program: one compile
    def modes(params, q, c, m, t, k1, k2):
        f = SEL.step_log_probs
        return (f(params, q, c, m, t), f(params, q, c, m, t, rng=k1, deterministic=True),
                f(params, q, c, m, t, rng=k2, deterministic=True), f(params, q, c, m, t, rng=k1, deterministic=False),
                f(params, q, c, m, t, rng=k1, deterministic=False), f(params, q, c, m, t, rng=k2, deterministic=False))

    out = modes(params, batch["q"], batch["C"], batch["mask"], batch["traj"], jax.random.PRNGKey(1),
                jax.random.PRNGKey(2))
    ev0, ev1, ev2, tr1, tr1b, tr2 = map(np.asarray, out)
    np.testing.assert_array_equal(ev0, ev1)
    np.testing.assert_array_equal(ev0, ev2)
    valid = np.broadcast_to(batch["mask"][:, None, None, :], ev0.shape)
    np.testing.assert_array_equal(tr1, tr1b)  # same key, same mask
    assert np.abs(tr1 - tr2)[valid].max() > 1e-2
    assert np.abs(tr1 - ev0)[valid].max() > 1e-2
    assert np.all(np.isfinite(tr1))



def test_dropout_keeps_each_element_with_its_probability_independently():
    x = jnp.ones((64, 64, 256))  # 2^20 elements: the binomial sd of the kept share is <= 0.0005
    drop = jax.jit(lambda rate, key: Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": key}),
                   static_argnums=0)
    for rate in (0.1, 0.5):
        a, b = np.asarray(drop(rate, jax.random.PRNGKey(1))), np.asarray(drop(rate, jax.random.PRNGKey(2)))
        keep_a, keep_b = a != 0, b != 0
        p = 1.0 - rate
        assert abs(keep_a.mean() - p) < 0.003 and abs(keep_b.mean() - p) < 0.003
        np.testing.assert_allclose(a[keep_a], 1.0 / p, rtol=1e-6)  # kept values scaled by 1 / keep probability
        assert abs(a.mean() - 1.0) < 0.01  # the expectation is unchanged
        # Two keys, and neighbouring elements of one mask, agree only as often as independent draws would.
        assert abs((keep_a & keep_b).mean() - p * p) < 0.003
        flat = keep_a.reshape(-1)
        assert abs((flat[1:] & flat[:-1]).mean() - p * p) < 0.003
        assert abs((keep_a[:, :, 1:] & keep_a[:, :, :-1]).mean() - p * p) < 0.003
        np.testing.assert_array_equal(a, np.asarray(drop(rate, jax.random.PRNGKey(1))))  # same key, same mask
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda x: Dropout(0.5).apply({}, x, deterministic=True))(x)),
                                  np.asarray(x))


# -- attention -------------------------------------------------------------------------------------

def _torch_attention_float64(params, query, keys, key_mask, num_heads):
    """``torch.nn.MultiheadAttention`` in eval mode, in float64 NumPy: the keys and values projected,
    scaled dot-product attention per head, masked keys excluded, the output projection."""
    w = np.asarray(params["in_proj_weight"], np.float64)
    b = np.asarray(params["in_proj_bias"], np.float64)
    h = w.shape[1]
    dh = h // num_heads
    q, k, v = (x @ w[i * h:(i + 1) * h].T + b[i * h:(i + 1) * h] for i, x in enumerate((query, keys, keys)))
    split = lambda x: x.reshape(x.shape[:-1] + (num_heads, dh))
    scores = np.einsum("bqnd,bknd->bnqk", split(q), split(k)) / np.sqrt(dh)
    scores = np.where(key_mask[:, None, None, :], scores, -1e9)
    attn = np.exp(scores - scores.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    out = np.einsum("bnqk,bknd->bqnd", attn, split(v)).reshape(query.shape[:-1] + (h,))
    return out @ np.asarray(params["out_proj"]["kernel"], np.float64) + np.asarray(params["out_proj"]["bias"])


def test_matmul_has_the_plain_products_value_and_gradients_also_under_vmap():
    """``matmul`` only changes how the weight gradient is laid out; value, both gradients and their vmap
    over runs (each run its own weights) equal plain ``x @ w`` in float64 numpy."""
    rng = np.random.default_rng(0)
    x, w, c = rng.normal(size=(3, 4, 5, 6)), rng.normal(size=(3, 6, 7)), rng.normal(size=(3, 4, 5, 7))

    def loss(x, w, c):
        return jnp.sum(jnp.tanh(matmul(x, w)) * c)

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    value, (gx, gw) = jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1))))(f32(x), f32(w), f32(c))
    y = np.einsum("rabn,rnm->rabm", x, w)
    g = (1.0 - np.tanh(y) ** 2) * c
    np.testing.assert_allclose(value, np.sum(np.tanh(y) * c, (1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(gx, np.einsum("rabm,rnm->rabn", g, w), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, np.einsum("rabn,rabm->rnm", x, g), rtol=1e-4, atol=1e-5)


def test_normalisation_has_torchs_gradient_also_at_a_zero_vector():
    """torch's ``F.normalize`` divides by ``max(||x||, eps)``: its gradient is ``(I − x̂x̂ᵀ)/||x||`` for a
    vector longer than eps and ``I/eps`` at (or below) eps. Dropout zeroes whole vectors of a small hidden
    size often enough (p^H per vector) that the second case occurs in training: a NaN there made a
    hidden-16 RCE epoch diverge."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    x[1] = 0.0
    x[2] = 1e-14  # norm below eps
    grad = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(l2_normalize(x) * w)))(jnp.asarray(x, jnp.float32)),
                      np.float64)
    n = np.linalg.norm(x[0])
    u = x[0] / n
    np.testing.assert_allclose(grad[0], (w[0] - u * (u @ w[0])) / n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad[1:], w[1:] / 1e-12, rtol=1e-5)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(l2_normalize(jnp.zeros((2, 4))), 0.0)


@pytest.mark.parametrize("tokens", [1, 12])
def test_attention_equals_torch_formula_whether_or_not_keys_are_projected(tokens):
    """One query token over 10 keys never projects the keys (scores and outputs are linear in them);
    12 tokens over 10 keys project them as torch does. Both give torch's numbers."""
    hidden, heads, keys_n = 8, 2, 10
    rng = np.random.default_rng(tokens)
    query = rng.normal(size=(3, tokens, hidden)).astype(np.float32)
    keys = rng.normal(size=(3, keys_n, hidden)).astype(np.float32)
    key_mask = np.arange(keys_n)[None, :] < np.array([[4], [keys_n], [0]])  # ragged, full, all masked
    mha = MultiheadAttention(hidden, heads, 0.0)

    @jax.jit  # init, perturbation and forward in one program: one compile
    def forward(query, keys, key_mask):
        params = _perturb(mha.init(jax.random.PRNGKey(0), query, keys, key_mask, deterministic=True)["params"],
                          jax.random.PRNGKey(1), scale=0.3)  # non-zero biases: the key bias must cancel
        return params, mha.apply({"params": params}, query, keys, key_mask, deterministic=True)

    params, out = forward(query, keys, key_mask)
    params, out = jax.tree_util.tree_map(np.asarray, params), np.asarray(out)
    np.testing.assert_allclose(out, _torch_attention_float64(params, query.astype(np.float64),
                                                             keys.astype(np.float64), key_mask, heads),
                               rtol=1e-5, atol=1e-5)


# -- gradients and frozen parameters ---------------------------------------------------------------

def _rce(params, batch, rng=None):
    step = SEL.step_log_probs(params, batch["q"], batch["C"], batch["mask"], batch["traj"], rng=rng,
                              deterministic=rng is None)
    return rce_loss(step, batch["traj"], batch["traj_mask"], batch["mask"], batch["rewards"], 1.0,
                    label_smoothing=0.1)


def _leaves(tree):
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _is_frozen(name):
    return any(f"'{m}'" in name for m in BACKBONE)


def test_gradients_reach_every_parameter_and_frozen_ones_get_no_update(params, batch):
    grads = jax.jit(jax.grad(_rce))(params, batch)
    for name, g in _leaves(grads).items():
        assert np.any(np.asarray(g) != 0.0), f"no gradient reaches {name}"
    frozen_names = [n for n in _leaves(params) if _is_frozen(n)]
    assert len(frozen_names) == 3

    @jax.jit
    def one_step(params, grads, wd):
        tx = make_optimizer(1e-3, wd, total_steps=10, frozen=BACKBONE, params=params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return updates, optax.apply_updates(params, updates)

    for wd in (0.0, 0.01):  # weight decay must not touch frozen leaves either
        updates, new_params = one_step(params, grads, wd)
        old, new = _leaves(params), _leaves(new_params)
        for name, u in _leaves(updates).items():
            u = np.asarray(u)
            if _is_frozen(name):
                assert np.all(u == 0.0), name
                np.testing.assert_array_equal(new[name], old[name])
            else:
                assert np.any(u != 0.0), f"trainable {name} got no update"
                # the first Adam step moves by about lr wherever the gradient is not tiny
                assert 0.5e-3 < np.abs(u).max() < 2e-3, name


def test_clip_norm_excludes_frozen_gradients(params):
    b1, g = 0.9, 0.01
    n_trainable = sum(x.size for n, x in _leaves(params).items() if not _is_frozen(n))
    assert g * np.sqrt(n_trainable) < 1.0  # the trainable gradient alone is below the clip norm
    grads = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full(x.shape, 1e6 if _is_frozen(jax.tree_util.keystr(path)) else g), params)

    def first_moment(frozen):
        @jax.jit
        def run(params, grads):
            tx = make_optimizer(1e-3, 0.0, total_steps=10, b1=b1, frozen=frozen, params=params)
            _, state = tx.update(grads, tx.init(params), params)
            return optax.tree_utils.tree_get(state, "mu")
        return run(params, grads)

    mu = _leaves(first_moment(BACKBONE))  # frozen leaves hold no moment at all (MaskedNode, not a leaf)
    assert set(mu) == {n for n in _leaves(params) if not _is_frozen(n)}
    for name, m in mu.items():
        np.testing.assert_allclose(m, (1.0 - b1) * g, rtol=1e-6, err_msg=name)
    # control: were the huge gradient counted, everything would be scaled down by ~1e-6
    unfrozen = _leaves(first_moment(()))
    some = next(iter(mu))
    assert np.abs(np.asarray(unfrozen[some])).max() < 1e-6 * (1.0 - b1) * g * 10


# -- learning probe --------------------------------------------------------------------------------

def _planted_task(rng, n, d, k, proj, gap=0.2):
    """Queries whose best candidate is the most similar one under the hidden projection ``proj``.

    Only queries whose best candidate wins by a cosine gap ≥ ``gap`` are kept, so the label is clear.
    """
    qs, cs, labels = [], [], []
    while len(qs) < n:
        q, c = rng.normal(size=d), rng.normal(size=(k, d))
        a, b = q @ proj, c @ proj
        cos = (b @ a) / np.linalg.norm(b, axis=1) / np.linalg.norm(a)
        top2 = np.sort(cos)[-2:]
        if top2[1] - top2[0] >= gap:
            qs.append(q)
            cs.append(c)
            labels.append(int(np.argmax(cos)))
    return np.array(qs, np.float32), np.array(cs, np.float32), np.array(labels, np.int32)


def test_learning_probe_sft_on_planted_task():
    d, k, n_train, n_test, steps, batch_size = 16, 8, 768, 512, 400, 64
    rng = np.random.default_rng(0)
    proj = rng.normal(size=(d, 8))
    q, c, y = map(jnp.asarray, _planted_task(rng, n_train, d, k, proj))
    qt, ct, yt = _planted_task(rng, n_test, d, k, proj)
    config = SelectorConfig(hidden=16, dropout=0.0, attn_dropout=0.0)
    sel = Selector(config)
    params = init_params(config, jax.random.PRNGKey(0), d)
    full = jnp.ones((batch_size, k), bool)

    @jax.jit
    def train(params, key):
        tx = make_optimizer(3e-3, 1e-3, total_steps=steps, schedule="warmup_cosine")

        def body(carry, key):
            p, state = carry
            idx = jax.random.choice(key, n_train, (batch_size,), replace=False)

            def loss(p):
                step = sel.step_log_probs(p, q[idx], c[idx], full, y[idx][:, None, None])
                return sft_loss(step[:, 0], y[idx][:, None], full, jnp.ones(batch_size, bool))

            value, grads = jax.value_and_grad(loss)(p)
            updates, state = tx.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), value

        (p, _), losses = jax.lax.scan(body, (params, tx.init(params)), jax.random.split(key, steps))
        return p, losses

    trained, losses = train(params, jax.random.PRNGKey(1))
    greedy = jax.jit(sel.greedy, static_argnames="num_steps")
    test_mask = np.ones((n_test, k), bool)
    acc_before = np.mean(np.asarray(greedy(params, qt, ct, test_mask, num_steps=1))[:, 0] == yt)
    acc_after = np.mean(np.asarray(greedy(trained, qt, ct, test_mask, num_steps=1))[:, 0] == yt)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses)) and losses[-50:].mean() < 0.25 * losses[:10].mean()
    assert acc_before < 0.6  # the task is not solved by the untrained (near-identity) network
    assert acc_after >= 0.95, f"held-out top-1 accuracy {acc_after:.3f} (before training {acc_before:.3f})"
