"""Parity with the reference trainer: leverjax at one query per step against a PyTorch transcription of the
reference's RCE and GRPO epochs (``tests/torch_parity.py``), same start, same query order.

Without dropout the two are the same computation in float32: per-step losses, KL, β and advantage
statistics, and the parameters after each phase, must agree to float32 rounding accumulated over the
steps, with GRPO's top-k curriculum on groups with tied rewards. With dropout the runs are random on
both sides; the epoch-1 GRPO KL of a few seeds must come from overlapping distributions.
"""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from original.torch_parity import ReferenceLoop, queries_from_dataset  # noqa: E402
from original.torch_reference import TorchPointerSelector  # noqa: E402

from leverjax.core import advantages as adv_lib  # noqa: E402
from leverjax.core import config as config_lib  # noqa: E402
from leverjax.core.train import Pipeline  # noqa: E402
from leverjax.data import synth  # noqa: E402
from leverjax.data.device import DeviceData  # noqa: E402
from leverjax.run import registry as experiments  # noqa: E402
from leverjax.tools import state_dict  # noqa: E402

DIM, HIDDEN = 24, 16


@pytest.fixture(scope="module")
def dataset():
    # 40 training queries, pools of 8, 3–8 trajectories with the simulator's tied accuracy levels.
    return synth.make_synthetic(seed=3, num_examples=200, num_queries=50, num_test_queries=0, pool_size=8,
                                max_trajectories=8, min_trajectories=3, dim=DIM)


def _config(**overrides):
    """scheme5_6 (z-score advantages, β 0.1 adaptive, top-k 3 → 5 with the reference's tie rule, frozen
    backbone in GRPO, reference policy = the starting model) at one query per step, no SFT."""
    values = dict(hidden=HIDDEN, sft_epochs=0, rce_epochs=2, grpo_epochs=3, rce_batch_size=1, grpo_batch_size=1,
                  eval_shots=2, eval_chunk=64)
    return config_lib.replace(experiments.get("scheme5_6").config, {**values, **overrides})


def _leverjax_steps(pipe, data, hp, key, orders):
    """Per-phase per-step metrics ``[epochs, steps]`` and the parameters after each phase, in one program."""
    state = pipe.init_state(data, hp, key)
    out = {"params0": state["params"]}
    for i, phase in enumerate(pipe.phases):
        state = pipe.begin_phase(i, state, data, hp)

        def epoch(s, xs, i=i):
            e, order = xs
            return pipe.train_steps(i, s, e, data, hp, order)

        state, metrics = jax.lax.scan(epoch, state, (jnp.arange(phase.epochs), orders[phase.name]))
        out[phase.name] = {"metrics": metrics, "params": state["params"]}
    return out


def _torch_params(model):
    params, _ = state_dict.torch_state_dict_to_params({k: v.detach().clone() for k, v in model.state_dict().items()},
                                                   num_heads=1)
    return params


def _orders(pipe, rng):
    n = len(pipe.split_index["train"])
    return {p.name: np.stack([rng.permutation(n) for _ in range(p.epochs)]) for p in pipe.phases}


def _compare_params(ours, theirs, atol):
    """Every parameter within ``atol`` — except the attention's key bias (rows H..2H of in_proj_bias):
    adding a constant vector to every key shifts all scores of a query equally, so its gradient is
    exactly 0 in exact arithmetic; in float32 it is rounding noise that Adam's normalisation turns into
    steps of up to the learning rate, different in any two implementations and without effect on any
    output."""
    flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
    for path, theirs_leaf in jax.tree_util.tree_leaves_with_path(theirs):
        a, b = np.asarray(flat_ours[path]), np.asarray(theirs_leaf)
        name = jax.tree_util.keystr(path)
        if name.endswith("['in_proj_bias']"):
            a, b = np.concatenate([a[:HIDDEN], a[2 * HIDDEN:]]), np.concatenate([b[:HIDDEN], b[2 * HIDDEN:]])
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=name)


def _close(ours, theirs, rtol, atol, what):
    ours, theirs = np.asarray(ours, np.float64).ravel(), np.asarray(theirs, np.float64).ravel()
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def test_batch_one_tracks_the_reference_loop_step_by_step(dataset):
    cfg = _config(dropout=0.0, attn_dropout=0.0)
    pipe, data = Pipeline(cfg, dataset), DeviceData.from_dataset(dataset)
    hp = pipe.hyperparameters()
    orders = _orders(pipe, np.random.default_rng(0))
    train_rows = pipe.split_index["train"]
    rows = {k: jnp.asarray(train_rows[v]) for k, v in orders.items()}
    ours = jax.jit(_leverjax_steps, static_argnums=0)(pipe, data, hp, jax.random.PRNGKey(0), rows)
    raw, norm = (np.asarray(x) for x in jax.jit(pipe.rewards)(data, hp))

    torch.manual_seed(0)
    model = TorchPointerSelector(DIM, HIDDEN, dropout=0.0, attn_dropout=0.0)
    model.load_state_dict(state_dict.params_to_torch_state_dict(ours["params0"]))
    # The reference also counts the frozen backbone's stale gradient of the last RCE step in GRPO's clipping
    # norm; leverjax does not (a known difference, see the last test). Here the transcription drops it.
    loop = ReferenceLoop(model, queries_from_dataset(dataset, raw, norm, train_rows), rce_lr=cfg.rce_lr,
                         grpo_lr=cfg.grpo_lr, kl_beta=cfg.kl_beta, rce_rewards=cfg.rce_rewards,
                         stale_backbone_grads=False)
    stale = copy.deepcopy(loop)
    stale.stale_backbone_grads = True

    rce = loop.rce(list(orders["rce"]))
    m = jax.tree_util.tree_map(lambda x: np.asarray(x).ravel(), ours["rce"]["metrics"])
    assert len(rce) == len(m["loss"]) == 2 * len(train_rows)
    _close(m["loss"], [r["loss"] for r in rce], 2e-5, 0, "RCE loss per step")
    _close(m["tau"], [r["tau"] for r in rce], 1e-6, 0, "RCE τ per step")
    _compare_params(ours["rce"]["params"], _torch_params(model), atol=3e-5)

    stale.rce(list(orders["rce"]))
    grpo = loop.grpo(list(orders["grpo"]))
    m = jax.tree_util.tree_map(lambda x: np.asarray(x).ravel(), ours["grpo"]["metrics"])
    _close(m["grad_norm"], [r["clip_norm"] for r in grpo], 2e-3, 1e-5, "GRPO gradient norm per step")
    assert len(grpo) == len(m["loss"]) == 3 * len(train_rows)
    # β moves ×1.5 or ÷1.5 after every step: the same sequence means the same KL decision at every step.
    _close(m["beta"], [r["beta"] for r in grpo], 1e-5, 0, "β after each step")
    for key, rtol, atol in (("loss", 2e-3, 5e-5), ("ppo_loss", 2e-3, 5e-5), ("kl", 2e-3, 1e-5),
                            ("mean_ratio", 1e-3, 0)):
        _close(m[key], [r[key] for r in grpo], rtol, atol, f"GRPO {key} per step")
    # The reference's z-score of an all-equal kept group is rounding noise (~1e-6), leverjax's exactly 0.
    for key in ("adv_std", "adv_mean", "adv_max_abs"):
        _close(m[key], [r[key] for r in grpo], 1e-5, 1e-5, f"GRPO {key} per step")
    _compare_params(ours["grpo"]["params"], _torch_params(model), atol=1e-4)

    # The groups include ties at the top-k boundary, where the reference keeps other trajectories than the
    # lowest indices: the parity holds because leverjax keeps the reference's.
    mask = np.asarray(dataset.traj[..., 0] >= 0)
    lowest = np.asarray(adv_lib.top_k_mask(norm, mask, 3, ties="lowest_index"))[train_rows]
    reference = np.asarray(adv_lib.top_k_mask(norm, mask, 3, ties="reference"))[train_rows]
    first_epoch = grpo[: len(train_rows)]
    for step, j in enumerate(orders["grpo"][0]):
        assert first_epoch[step]["kept"] == sorted(np.flatnonzero(reference[j][mask[train_rows[j]]]).tolist())
    assert (lowest != reference).any(axis=1).sum() >= 5

    # The reference's own quirk, measured: with the stale backbone gradient in the clipping norm, the norm
    # (and so every clipped step) differs from leverjax's from the first GRPO step on.
    stale_grpo = stale.grpo(list(orders["grpo"]))
    gap = np.abs(np.array([r["clip_norm"] for r in stale_grpo]) - m["grad_norm"])
    assert gap[0] > 1e-5 and gap.max() > 1e-2


def test_epoch_one_kl_with_dropout_overlaps_the_reference_loop(dataset):
    """Dropout on (each trajectory with its own mask, as in the reference): the mean GRPO KL of epoch 1
    over 3 seeds on each side; the two samples must overlap and their means agree within the noise."""
    cfg = _config(rce_epochs=1, grpo_epochs=1, dropout_per_trajectory=True)
    pipe, data = Pipeline(cfg, dataset), DeviceData.from_dataset(dataset)
    train_rows = pipe.split_index["train"]
    hp = pipe.hyperparameters()
    run = jax.jit(_leverjax_steps, static_argnums=0)
    raw, norm = (np.asarray(x) for x in jax.jit(pipe.rewards)(data, hp))
    ours_kl, theirs_kl = [], []
    for seed in range(3):
        orders = _orders(pipe, np.random.default_rng(seed))
        ours = run(pipe, data, hp, jax.random.PRNGKey(seed), {k: jnp.asarray(train_rows[v]) for k, v in orders.items()})
        ours_kl.append(float(np.mean(ours["grpo"]["metrics"]["kl"])))
        torch.manual_seed(100 + seed)
        model = TorchPointerSelector(DIM, HIDDEN, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout)
        model.load_state_dict(state_dict.params_to_torch_state_dict(ours["params0"]))
        loop = ReferenceLoop(model, queries_from_dataset(dataset, raw, norm, train_rows), rce_lr=cfg.rce_lr,
                             grpo_lr=cfg.grpo_lr, kl_beta=cfg.kl_beta, rce_rewards=cfg.rce_rewards,
                             stale_backbone_grads=False)
        loop.rce(list(orders["rce"]))
        theirs_kl.append(float(np.mean([r["kl"] for r in loop.grpo(list(orders["grpo"]))])))
    ours_kl, theirs_kl = np.asarray(ours_kl), np.asarray(theirs_kl)
    assert np.all(np.isfinite(ours_kl)) and np.all(ours_kl > 0)
    assert ours_kl.min() <= theirs_kl.max() and theirs_kl.min() <= ours_kl.max(), (ours_kl, theirs_kl)
    spread = np.sqrt(ours_kl.var(ddof=1) / 3 + theirs_kl.var(ddof=1) / 3)
    assert abs(ours_kl.mean() - theirs_kl.mean()) <= 4 * spread, (ours_kl, theirs_kl)
