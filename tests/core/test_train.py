"""The training engine end to end on a tiny synthetic set: every experiment traces, runs resume
exactly, vmapped seeds equal single runs, GRPO learns, and each defect option does what it says."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from leverjax.core import config as config_lib
from leverjax.core.evaluate import Evaluator
from leverjax.core.program import make_train
from leverjax.core.train import Pipeline
from leverjax.data import synth
from leverjax.data.device import DeviceData
from leverjax.errors import LeverjaxError
from leverjax.run import registry as experiments
from leverjax.run.engine import Runner, TrainingDiverged, expand_runs

TINY = dict(hidden=16, sft_epochs=2, rce_epochs=2, grpo_epochs=2, sft_batch_size=16, rce_batch_size=8,
            grpo_batch_size=8, eval_chunk=64, eval_shots=3)


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


def tiny_config(name="scheme5_6", **overrides):
    cfg = experiments.get(name).config
    values = {**TINY, **overrides}
    if cfg.grpo_positive_only_epochs:
        values.setdefault("grpo_positive_only_epochs", 1)
    if cfg.grpo_epochs == 0:  # an experiment without GRPO keeps none unless asked
        values["grpo_epochs"] = overrides.get("grpo_epochs", 0)
    return config_lib.replace(cfg, values)


def sections(lines):
    """The phase of every ``== <phase>: ...`` table header a runner printed."""
    return [line.strip()[3:].split()[0].rstrip(":") for line in lines if line.strip().startswith("== ")]


def final_run(runner):
    res = runner.run()
    return res, {k: np.array([r[k] for r in res.final]) for k in res.final[0] if k.startswith(("test_", "best_"))}


@pytest.mark.parametrize("name", experiments.NAMES)
def test_every_experiment_traces_its_whole_run(tiny, name):
    cfg = tiny_config(name, sft_epochs=1, rce_epochs=1, grpo_epochs=1 if experiments.get(name).config.grpo_epochs else 0)
    train, pipe, data = make_train(cfg, tiny)
    state, history, final = jax.eval_shape(train, pipe.hyperparameters(), jax.random.PRNGKey(0))
    assert sorted(p.name for p in pipe.phases) == sorted(history)
    assert "test_loss" in final and final["test_loss"].shape == ()
    if cfg.grpo_epochs:
        assert history["grpo"]["train_kl"].shape == (1,)


def test_whole_run_program_compiles_and_runs(tiny):
    cfg = tiny_config("scheme5_6_fixed", sft_epochs=1, rce_epochs=1, grpo_epochs=2)
    train, pipe, _ = make_train(cfg, tiny)
    hp = pipe.hyperparameters()
    state, history, final = jax.jit(train)(hp, jax.random.PRNGKey(0))
    assert np.isfinite(float(final["test_loss"]))
    assert set(history) == {"sft", "rce", "grpo"}
    assert all(np.isfinite(np.asarray(v)).all() for v in history["grpo"].values() if v.dtype.kind == "f"
               and not np.isnan(np.asarray(v)).all())


def test_resume_after_interruption_gives_identical_metrics(tiny, tmp_path, monkeypatch):
    cfg = tiny_config("scheme5_6", checkpoint_every=1, checkpoint_seconds=0.0)
    runs = expand_runs({}, 0, 2)
    _, full = final_run(Runner(cfg, tiny, runs, name="full", workdir=str(tmp_path)))

    calls = {"n": 0}
    original = Runner._save

    def killed_after_three(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Runner, "_save", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        Runner(cfg, tiny, runs, name="resumed", workdir=str(tmp_path)).run()
    monkeypatch.setattr(Runner, "_save", original)
    lines = []
    res, resumed = final_run(Runner(cfg, tiny, runs, name="resumed", workdir=str(tmp_path), out=lines.append))
    assert any("resuming" in line for line in lines)
    assert len(res.history) == 2 * (2 + 2 + 2)
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)
    assert (tmp_path / "resumed" / "metrics.jsonl").read_text().count("\n") == len(res.history)


def test_resume_refuses_a_different_config(tiny, tmp_path):
    cfg = tiny_config("scheme5_6", sft_epochs=1, rce_epochs=0, grpo_epochs=0)
    Runner(cfg, tiny, expand_runs({}, 0, 1), name="x", workdir=str(tmp_path)).run()
    other = config_lib.replace(cfg, {"sft_lr": 1e-3})
    with pytest.raises(LeverjaxError, match="different config"):
        Runner(other, tiny, expand_runs({}, 0, 1), name="x", workdir=str(tmp_path))


def test_a_checkpoint_of_another_state_layout_is_refused_by_name(tiny, tmp_path, monkeypatch):
    cfg = tiny_config("scheme5_6", sft_epochs=1, rce_epochs=0, grpo_epochs=0)
    Runner(cfg, tiny, expand_runs({}, 0, 1), name="x", workdir=str(tmp_path)).run()
    from leverjax.run import engine as runner_lib
    monkeypatch.setattr(runner_lib, "STATE_LAYOUT", runner_lib.STATE_LAYOUT + 1)
    with pytest.raises(LeverjaxError, match=r"after sft epoch 1\) holds a training state of layout 2, .*--restart"):
        Runner(cfg, tiny, expand_runs({}, 0, 1), name="x", workdir=str(tmp_path)).run()


def test_two_vmapped_seeds_equal_two_single_seed_runs(tiny):
    cfg = tiny_config("scheme5_6")
    _, both = final_run(Runner(cfg, tiny, expand_runs({}, 0, 2)))
    _, first = final_run(Runner(cfg, tiny, expand_runs({}, 0, 1)))
    _, second = final_run(Runner(cfg, tiny, expand_runs({}, 1, 1)))
    for k in both:
        np.testing.assert_allclose(both[k], np.concatenate([first[k], second[k]]), rtol=2e-5, atol=2e-6,
                                   err_msg=k)
    assert not np.allclose(both["test_loss"][0], both["test_loss"][1])  # the seeds really differ


def test_grpo_raises_expected_reward_on_training_groups(tiny):
    cfg = tiny_config("scheme5_6_fixed", sft_epochs=0, rce_epochs=0, grpo_epochs=8, grpo_lr=3e-3,
                      freeze_backbone=False, dropout=0.0, attn_dropout=0.0, kl_beta=0.0, adaptive_beta=False,
                      reward_normalization="none")
    train, pipe, data = make_train(cfg, tiny)
    hp = pipe.hyperparameters()
    state0 = pipe.init_state(data, hp, jax.random.PRNGKey(0))
    before = Evaluator(pipe).evaluate(state0["params"], state0["ref_params"], data, hp, "train")["expected_reward"]
    state, _, _ = jax.jit(train)(hp, jax.random.PRNGKey(0))
    after = Evaluator(pipe).evaluate(state["params"], state["ref_params"], data, hp, "train")["expected_reward"]
    assert float(after) > float(before) + 0.02, (float(before), float(after))


def grpo_history(tiny, **overrides):
    """GRPO's training metrics per epoch (a GRPO-only run unless SFT/RCE epochs are asked for), from the
    whole run's phases without its evaluations (most of a whole-run program, and none of GRPO's signals)."""
    cfg = tiny_config("scheme5_6", **{"sft_epochs": 0, "rce_epochs": 0, **overrides})
    pipe = Pipeline(cfg, tiny)
    data = DeviceData.from_dataset(tiny)

    def phases(hp, rng):
        state, history = pipe.init_state(data, hp, rng), {}
        for i, phase in enumerate(pipe.phases):
            state = pipe.begin_phase(i, state, data, hp)
            epoch = lambda s, e, i=i: pipe.train_epoch(i, s, e, data, hp)  # noqa: E731
            state, history[phase.name] = jax.lax.scan(epoch, state, jnp.arange(phase.epochs))
        return history

    history = jax.jit(phases)(pipe.hyperparameters(), jax.random.PRNGKey(1))
    return {k: np.asarray(v) for k, v in history["grpo"].items()}


def test_post_rce_reference_without_ratio_dropout_starts_at_ratio_one(tiny):
    common = dict(grpo_lr=0.0, sft_epochs=0, rce_epochs=1, grpo_epochs=1)  # without SFT the "sft" policy is the init
    fixed = grpo_history(tiny, reference_policy="post_rce", ratio_dropout=False, **common)
    assert np.all(fixed["train_mean_ratio"] == 1.0) and np.all(fixed["train_kl"] == 0.0)
    drift = grpo_history(tiny, reference_policy="sft", ratio_dropout=False, **common)  # defect 5.1: RCE drift
    assert np.all(drift["train_kl"] > 1e-6)
    noisy = grpo_history(tiny, reference_policy="post_rce", ratio_dropout=True, **common)  # defect 5.2
    assert np.all(noisy["train_kl"] > 1e-6)


def test_clip_only_ignores_beta_in_the_reference_and_applies_it_when_fixed(tiny):
    ref = grpo_history(tiny, clip_only=True, kl_beta=0.5, adaptive_beta=False)
    np.testing.assert_allclose(ref["train_loss"], ref["train_ppo_loss"], rtol=1e-6)
    fixed = grpo_history(tiny, clip_only=True, clip_only_ignores_beta=False, kl_beta=0.5, adaptive_beta=False)
    np.testing.assert_allclose(fixed["train_loss"], fixed["train_ppo_loss"] + 0.5 * fixed["train_kl"], rtol=1e-4)
    assert np.all(fixed["train_kl"] > 0)


def test_top_k_curriculum_collapses_groups_and_can_be_turned_off(tiny):
    topk = grpo_history(tiny, grpo_top_k=True, top_k_first=2, top_k_after=2)
    full = grpo_history(tiny, grpo_top_k=False)
    assert topk["train_zero_var_frac"].mean() > full["train_zero_var_frac"].mean()


def test_nan_guard_names_phase_and_keeps_last_checkpoint(tiny, tmp_path):
    cfg = tiny_config("scheme5_6", grpo_lr=1e30, freeze_backbone=False, rce_epochs=1, sft_epochs=1)
    runner = Runner(cfg, tiny, expand_runs({}, 0, 1), name="nan", workdir=str(tmp_path))
    with pytest.raises(TrainingDiverged, match=r"grpo epoch \d: (train|val)_loss is nan"):
        runner.run()
    assert runner.store.latest_step() == 2  # the SFT and RCE epochs; nothing after the divergence



def test_a_group_whose_every_run_diverged_stops_training(tiny, tmp_path):
    cfg = tiny_config("scheme5_6", grpo_lr=1e30, freeze_backbone=False, rce_epochs=1, sft_epochs=1, grpo_epochs=5)
    lines = []
    res = Runner(cfg, tiny, expand_runs({}, 0, 2), name="nan", workdir=str(tmp_path), on_nonfinite="record",
                 out=lines.append).run()
    assert set(res.failures) == {0, 1} and res.final == []
    last = max(f["epoch"] for f in res.failures.values())
    assert max(r["epoch"] for r in res.history if r["phase"] == "grpo") == last < 5  # 1-based
    assert any(line == "every run of nan diverged: its training stops here" for line in lines)


def test_per_trajectory_dropout_reaches_the_rce_steps(tiny):
    """--dropout_per_trajectory gives every trajectory its own dropout mask in RCE steps too, as the
    reference's RCE encodes the query and pool once per beam: at the same rng the first RCE step's loss
    differs from the shared-mask one, and without dropout the two are equal."""
    from leverjax.data.device import DeviceData, gather

    data = DeviceData.from_dataset(tiny)

    def first_rce_loss(**overrides):
        pipe = Pipeline(tiny_config("scheme5_6", sft_epochs=0, **overrides), tiny)

        @jax.jit  # one program, not hundreds of eager ops
        def loss(hp):
            state = pipe.begin_phase(0, pipe.init_state(data, hp, jax.random.PRNGKey(0)), data, hp)
            state, ctx, batches = pipe.epoch_setup(0, state, 0, data, hp)
            loss_fn = pipe._loss_fn("rce", gather(data, batches[0]), state, hp, ctx, 0)
            return loss_fn(state["params"], jax.random.PRNGKey(1))[0]
        return float(loss(pipe.hyperparameters()))

    assert first_rce_loss(dropout_per_trajectory=True) != first_rce_loss(dropout_per_trajectory=False)
    assert first_rce_loss(dropout_per_trajectory=True, dropout=0.0, attn_dropout=0.0) == pytest.approx(
        first_rce_loss(dropout_per_trajectory=False, dropout=0.0, attn_dropout=0.0), rel=1e-6)


def test_runs_with_the_same_prefix_reuse_its_sft_and_rce(tiny, tmp_path):
    cache = str(tmp_path / "prefix")
    runs = expand_runs({}, 0, 2)
    first, _ = final_run(Runner(tiny_config("scheme5_6"), tiny, runs, prefix_cache=cache))
    lines = []
    other_grpo = tiny_config("scheme5_6", grpo_lr=1e-3, advantage="rank")  # differs only after RCE
    reused, reused_final = final_run(Runner(other_grpo, tiny, runs, prefix_cache=cache, out=lines.append))
    assert any("reusing the sft, rce phases" in line for line in lines)
    assert sections(lines) == ["grpo"]
    prefix = [r for r in first.history if r["phase"] != "grpo"]
    assert [r for r in reused.history if r["phase"] != "grpo"] == prefix
    _, fresh_final = final_run(Runner(other_grpo, tiny, runs))
    for k in fresh_final:
        np.testing.assert_array_equal(reused_final[k], fresh_final[k], err_msg=k)
    lines.clear()
    Runner(tiny_config("scheme5_6", sft_lr=3e-4), tiny, runs, prefix_cache=cache, out=lines.append).run()
    assert not any("reusing" in line for line in lines)  # an SFT field changes the key




def test_runs_that_differ_from_rce_on_reuse_the_sft_alone(tiny, tmp_path):
    """scheme10's RCE settings differ from scheme5_6's, its SFT does not: after scheme5_6 it starts at RCE,
    with the numbers of a fresh run."""
    cache, runs = str(tmp_path / "prefix"), expand_runs({}, 0, 2)
    first = Runner(tiny_config("scheme5_6", grpo_epochs=1), tiny, runs, prefix_cache=cache, out=lambda s: None).run()
    other = tiny_config("scheme10", rce_epochs=3)
    lines = []
    reused, reused_final = final_run(Runner(other, tiny, runs, prefix_cache=cache, out=lines.append))
    assert any("reusing the sft phases" in line for line in lines)
    assert sections(lines) == ["rce"]
    assert [r for r in reused.history if r["phase"] == "sft"] == [r for r in first.history if r["phase"] == "sft"]
    fresh, fresh_final = final_run(Runner(other, tiny, runs))
    assert reused.history == fresh.history
    for k in fresh_final:
        np.testing.assert_array_equal(reused_final[k], fresh_final[k], err_msg=k)


def test_a_run_without_grpo_shares_its_sft_and_rce_with_grpo_runs_both_ways(tiny, tmp_path):
    """rce_only's whole run is the prefix of scheme5_6's: after one of them the other starts where the
    first stopped (rce_only at its final evaluation, on the best RCE parameters), with the numbers of a
    fresh run."""
    runs = expand_runs({}, 0, 2)
    rce_only, grpo = tiny_config("rce_only"), tiny_config("scheme5_6", grpo_epochs=1)
    fresh, fresh_final = final_run(Runner(rce_only, tiny, runs))
    lines = []
    Runner(grpo, tiny, runs, prefix_cache=str(tmp_path / "a"), out=lambda s: None).run()
    reused, reused_final = final_run(Runner(rce_only, tiny, runs, prefix_cache=str(tmp_path / "a"),
                                            out=lines.append))
    assert any("reusing the sft, rce phases" in line for line in lines)
    assert sections(lines) == []  # no training phase
    assert reused.history == fresh.history
    for k in fresh_final:
        np.testing.assert_array_equal(reused_final[k], fresh_final[k], err_msg=k)
    lines.clear()
    Runner(rce_only, tiny, runs, prefix_cache=str(tmp_path / "b"), out=lambda s: None).run()
    Runner(grpo, tiny, runs, prefix_cache=str(tmp_path / "b"), out=lines.append).run()
    assert any("reusing the sft, rce phases" in line for line in lines)


def test_a_prefix_entry_appears_whole_so_runs_can_share_a_cache_at_once(tiny, tmp_path, monkeypatch):
    """While a run writes its SFT/RCE prefix, another run reading the same cache finds no entry (not half of
    one): the entry is written aside and renamed into place. A second writer of the same key keeps the
    first's entry; --restart replaces it."""
    from leverjax.run import checkpoint as ckpt_lib
    cache = tmp_path / "cache"
    saves, save = [], ckpt_lib.save_params

    def watched(path, params, meta):
        entries = [e for e in os.listdir(cache) if not e.startswith(".")] if cache.is_dir() else []
        saves.append((path, entries))
        save(path, params, meta)

    monkeypatch.setattr(ckpt_lib, "save_params", watched)
    cfg, runs = tiny_config("scheme5_6", grpo_epochs=1), expand_runs({}, 0, 1)
    Runner(cfg, tiny, runs, prefix_cache=str(cache), out=lambda s: None).run()
    assert len(saves) == 2  # after SFT and after RCE
    for path, before in saves:
        assert os.path.dirname(path) == str(cache / ".partial")
        assert os.path.basename(path).split("-")[0] not in before
    key, _ = [e for e in os.listdir(cache) if not e.startswith(".")]
    assert os.listdir(cache / ".partial") == []
    params, meta = ckpt_lib.load_params(str(cache / key))
    # another writer of the same key finishing later: its copy is dropped, the entry stays as it was
    late = str(cache / ".partial" / "late")
    save(late, jax.tree_util.tree_map(lambda x: x * 0, params), meta)
    assert not ckpt_lib.publish(late, str(cache / key)) and not os.path.exists(late)
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(ckpt_lib.load_params(str(cache / key))[0])[0],
                                  jax.tree_util.tree_leaves(params)[0])
    save(late, jax.tree_util.tree_map(lambda x: x * 0, params), meta)
    assert ckpt_lib.publish(late, str(cache / key), replace=True)
    assert not np.any(jax.tree_util.tree_leaves(ckpt_lib.load_params(str(cache / key))[0])[0])
    assert sorted(os.listdir(cache / ".partial")) == []


def test_runs_of_a_group_that_share_a_prefix_train_it_once_with_the_same_numbers(tiny, tmp_path):
    """Two β values × two seeds: four runs, two distinct SFT/RCE prefixes, each trained once; every number
    equals the runs that each trained their own prefix up to float32 rounding (a program of 2 runs rounds
    some reductions differently from one of 4: relative differences of about 1e-7, not bit for bit)."""
    cfg = tiny_config("scheme5_6", grpo_epochs=1)
    runs = expand_runs({"kl_beta": (0.1, 0.2)}, 0, 2)
    plain = Runner(cfg, tiny, runs, out=lambda s: None).run()
    lines = []
    shared = Runner(cfg, tiny, runs, out=lines.append, prefix_cache=str(tmp_path / "cache")).run()
    assert any("4 runs share 2 distinct sft, rce prefix(es)" in line for line in lines)
    assert len([e for e in os.listdir(tmp_path / "cache") if not e.startswith(".")]) == 4  # after SFT, RCE
    def numbers(records):
        table = {(r["run"], r.get("phase"), r.get("epoch")): r for r in records}
        return {k: {m: v for m, v in rec.items() if isinstance(v, float)} for k, rec in table.items()}

    for ours, theirs in ((shared.final, plain.final), (shared.history, plain.history)):
        a, b = numbers(ours), numbers(theirs)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].keys() == b[key].keys()
            np.testing.assert_allclose([a[key][m] for m in a[key]], [b[key][m] for m in a[key]], rtol=1e-5,
                                       atol=1e-6, err_msg=str(key))


def test_over_runs_computes_one_run_without_vmap_and_the_same_numbers():
    import jax.numpy as jnp

    from leverjax.run.engine import over_runs
    seen = []

    def fn(state, scale):
        seen.append(type(state["w"]).__name__)
        return {"y": jnp.tanh(state["w"] @ state["w"].T) * scale, "n": jnp.sum(state["w"])}

    w = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))
    for runs in (1, 3):
        state = {"w": w[:runs]}
        got = over_runs(fn, (0, None))(state, 2.0)
        want = jax.vmap(fn, in_axes=(0, None))(state, 2.0)
        assert jax.tree_util.tree_map(jnp.shape, got) == jax.tree_util.tree_map(jnp.shape, want)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
    batched = [name for name in seen if "Batch" in name]
    assert seen[0] != "BatchTracer" and batched, seen  # 1 run: traced unbatched; 3 runs: through vmap
