"""The config describes itself: every field's declared kind holds in training (a run field changes no
metric, a sweepable one no compiled program, a static one the program), and the flags, help, validation,
grouping and prefix key derived from the declarations behave."""
import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from leverjax.core import advantages
from leverjax.core import config as config_lib
from leverjax.core import losses, model, optim, rewards, rollout
from leverjax.run import rounds
from leverjax.core.evaluate import Evaluator
from leverjax.core.train import Pipeline
from leverjax.data import synth
from leverjax.data.device import DeviceData
from leverjax.errors import ConfigError
from leverjax.run.engine import Runner, expand_runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = config_lib.replace(config_lib.Config(), dict(
    hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=1, sft_batch_size=16, rce_batch_size=8, grpo_batch_size=8,
    eval_chunk=64, eval_shots=2))


def perturbed(name: str, value):
    """Another valid value of field ``name``."""
    m = config_lib.meta(name)
    if name == "dual_clip":  # valid values: 0 (off) or above 1
        return 3.0 if value == 0 else 0.0
    if m["choices"]:
        return next(c for c in m["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return 0.3 if value <= 0 else (value * 0.5 if m["unit"] else value * 1.5 + 0.01)
    return {"best_metric": "val_loss" if value != "val_loss" else "val_expected_reward", "data": "other.npz",
            "workdir": "elsewhere", "round_mix": "beam=2,random=1", "data_transform": "balanced"}[name]


def test_choice_lists_match_the_modules_that_implement_them():
    # ReMax's baseline is the greedy selection's score: on-policy GRPO computes it (core/rollout.py)
    assert config_lib.meta("advantage")["choices"] == advantages.ADVANTAGE_METHODS + ("remax",)
    assert config_lib.meta("rollout_scorer")["choices"] == rollout.SCORERS
    assert config_lib.meta("top_k_ties")["choices"] == advantages.TOP_K_TIES
    assert config_lib.meta("kl_estimator")["choices"] == losses.KL_ESTIMATORS
    assert config_lib.meta("reward_mode")["choices"] == rewards.REWARD_MODES
    assert config_lib.meta("reward_normalization")["choices"] == rewards.NORMALIZATIONS
    assert config_lib.SCHEDULES == optim.SCHEDULES
    assert set(config_lib.meta("round_scorer")["choices"]) == set(rounds.SCORER_MODES)
    assert config_lib.meta("selector")["choices"] == tuple(model.PRESETS)
    for name, registry in (("update", model.UPDATES), ("scoring", model.SCORINGS), ("set_term", model.SET_TERMS),
                           ("cand_encoder", model.CAND_ENCODERS), ("decoder", model.DECODERS)):
        assert config_lib.meta(name)["choices"] == ("",) + registry
    for name, registry in (("mmr_reduction", model.MMR_REDUCTIONS), ("refine_type", model.REFINE_TYPES),
                           ("refine_outside", model.REFINE_OUTSIDE)):
        assert config_lib.meta(name)["choices"] == registry


def _prefix_result(cfg, data_set, through="rce"):
    """Every run's state and validation metrics at the end of the phases before GRPO (``through="sft"``:
    at the end of SFT)."""
    pipe = Pipeline(cfg, data_set)
    ev = Evaluator(pipe)
    data = DeviceData.from_dataset(data_set)
    end = [p.kind for p in pipe.phases].index("grpo" if through == "rce" else "rce")

    def prefix(hp, rng):
        state = pipe.init_state(data, hp, rng)
        metrics = []
        for i in range(end):
            state = pipe.begin_phase(i, state, data, hp)
            for e in range(pipe.phases[i].epochs):
                state, _ = pipe.train_epoch(i, state, e, data, hp)
                state, val = ev.validate_epoch(state, e, data, hp)
                metrics.append(val)
        return {k: state[k] for k in Runner._PREFIX_KEYS}, metrics

    return jax.jit(prefix)(pipe.hyperparameters(), jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def tiny():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


# -- the declared kinds, by what training does: run fields change no number, sweepable ones no program, static
# ones the program. One tiny run trained first (its programs compiled), then one run per kind.

class Lowerings:
    """Records the name of every program JAX lowers (traces to MLIR, before compiling it or finding it in the
    on-disk cache) while the context is open: none means every program came from jit's in-memory caches."""

    EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

    def __enter__(self):
        self.names = []
        self._listener = lambda event, duration, **kw: self.names.append(kw.get("fun_name", "?")) \
            if event == self.EVENT else None
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


def train(cfg, data_set, workdir):
    res = Runner(cfg, data_set, expand_runs({}, 0, 1), name="run", workdir=str(workdir), out=lambda line: None).run()
    return res.history, res.final


def bits(records):
    """``records`` with every float as its exact bits (NaN included), for bitwise comparison."""
    return [{k: float(v).hex() if isinstance(v, (float, np.floating)) else v for k, v in r.items()} for r in records]


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """BASE (checkpointed after every epoch) trained once: its config, history and final metrics."""
    cfg = config_lib.replace(BASE, {"checkpoint_every": 1, "checkpoint_seconds": 0.0})
    return (cfg, *train(cfg, tiny, tmp_path_factory.mktemp("base")))


def test_run_fields_leave_every_metric_bitwise_equal(tiny, trained, tmp_path):
    """The run fields (all but the seeds) changed at once: every epoch's and the final metrics are the same
    bits, and no program is compiled again."""
    cfg, history, final = trained
    fields = [n for n in config_lib.RUN_ONLY if n not in ("seed", "seeds")]  # the seeds are other runs
    assert {"workdir", "checkpoint_every", "checkpoint_seconds"} <= set(fields)
    other = config_lib.replace(cfg, {"checkpoint_every": 2, "checkpoint_seconds": 1e6,
                                     **{n: perturbed(n, getattr(cfg, n)) for n in fields
                                        if n not in ("checkpoint_every", "checkpoint_seconds")}})
    assert all(getattr(other, n) != getattr(cfg, n) for n in fields)
    with Lowerings() as lowered:
        other_history, other_final = train(other, tiny, tmp_path / "elsewhere")
    assert lowered.names == []
    assert len(history) == 3 and bits(other_history) == bits(history)
    assert bits(other_final) == bits(final)


def test_a_new_sweepable_value_reuses_the_compiled_programs(tiny, trained, tmp_path):
    """grpo_lr and kl_beta changed: the run trains on the programs already compiled (nothing is lowered
    again) and the new values take effect (its GRPO metrics differ)."""
    cfg, history, _ = trained
    assert {"grpo_lr", "kl_beta"} <= set(config_lib.SWEEPABLE)
    other = config_lib.replace(cfg, {"grpo_lr": cfg.grpo_lr * 100, "kl_beta": 0.5})
    with Lowerings() as lowered:
        other_history, _ = train(other, tiny, tmp_path)
    assert lowered.names == []
    assert bits(other_history[:2]) == bits(history[:2])  # SFT and RCE: neither field acts there
    assert other_history[2]["phase"] == "grpo" and other_history[2]["train_loss"] != history[2]["train_loss"]


def test_a_static_field_compiles_new_programs(tiny, trained, tmp_path):
    """hidden changed: the training programs are lowered (compiled) again, then a sweepable change of that
    new config lowers none (so the counter sees lowerings, and the two tests above can fail)."""
    cfg, _, _ = trained
    assert config_lib.meta("hidden")["kind"] == "static"
    other = config_lib.replace(cfg, {"hidden": 8})
    with Lowerings() as lowered:
        train(other, tiny, tmp_path / "a")
    assert len(lowered.names) >= 3, lowered.names  # at least one epoch program per phase
    with Lowerings() as again:
        train(config_lib.replace(other, {"kl_beta": 0.5}), tiny, tmp_path / "b")
    assert again.names == []


def test_prefix_neutral_fields_leave_the_sft_rce_prefix_unchanged(tiny):
    """All fields declared prefix-neutral changed at once (seed and data aside: the prefix key holds them
    separately) give the same SFT/RCE state; one prefix field changes it (the comparison can fail)."""
    neutral = [n for n in config_lib.names(prefix=False) if n not in ("seed", "data")]
    assert "kl_beta" in neutral and "grpo_top_k" in neutral and "reference_policy" not in neutral
    changed = {n: perturbed(n, getattr(BASE, n)) for n in neutral}
    base, base_metrics = _prefix_result(BASE, tiny)
    same, same_metrics = _prefix_result(config_lib.replace(BASE, changed), tiny)
    jax.tree_util.tree_map(np.testing.assert_array_equal, base, same)
    jax.tree_util.tree_map(np.testing.assert_array_equal, base_metrics, same_metrics)
    other, _ = _prefix_result(dataclasses.replace(BASE, rce_lr=3e-3), tiny)
    assert not np.array_equal(other["params"]["query_proj"]["kernel"], base["params"]["query_proj"]["kernel"])



def test_fields_acting_from_rce_leave_the_state_after_sft_unchanged(tiny):
    """All fields declared to act from RCE changed at once give the same state and metrics after SFT; one
    field acting from SFT changes it (the comparison can fail)."""
    from_rce = [n for n in config_lib.FIELDS if config_lib.meta(n)["acts_from"] == "rce"]
    assert {"rce_lr", "reference_policy", "dropout_per_trajectory"} <= set(from_rce)
    assert "label_smoothing" not in from_rce and "sft_lr" not in from_rce
    changed = {n: perturbed(n, getattr(BASE, n)) for n in from_rce}
    base, base_metrics = _prefix_result(BASE, tiny, through="sft")
    same, same_metrics = _prefix_result(config_lib.replace(BASE, changed), tiny, through="sft")
    jax.tree_util.tree_map(np.testing.assert_array_equal, base, same)
    jax.tree_util.tree_map(np.testing.assert_array_equal, base_metrics, same_metrics)
    _, other_metrics = _prefix_result(dataclasses.replace(BASE, label_smoothing=0.2), tiny, through="sft")
    assert not np.array_equal(other_metrics[0]["val_loss"], base_metrics[0]["val_loss"])  # validated in SFT


def test_validation_is_derived_from_the_declarations():
    with pytest.raises(ConfigError, match="advantage='bogus' is not one of: zscore"):
        config_lib.replace(BASE, {"advantage": "bogus"})
    with pytest.raises(ConfigError, match="dropout=1.0 must lie in"):
        config_lib.replace(BASE, {"dropout": 1.0})
    with pytest.raises(ConfigError, match="grpo_batch_size=0 must be at least 1"):
        config_lib.replace(BASE, {"grpo_batch_size": 0})
    with pytest.raises(ConfigError, match="--adaptive_beta='maybe' is not a valid boolean"):
        config_lib.replace(BASE, {"adaptive_beta": "maybe"})
    with pytest.raises(ConfigError, match="unknown config field"):
        config_lib.replace(BASE, {"hiddn": 3})
    assert config_lib.replace(BASE, {"grpo_lr": "1e-4"}).grpo_lr == 1e-4


def test_help_exits_0_and_describes_fields_with_their_choices():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.index("--experiment") < text.index("--seeds") < text.index("--sweep") < text.index("--reward_mode")
    block = text[text.index("  --advantage\n"):].split("\n  --")[0]
    assert config_lib.meta("advantage")["help"].split()[0] in block
    assert "one of zscore, rank, mean, rloo," in block and "none, remax]" in block and "default 'rank'" in block
    for section in ("selector", "sft", "rce", "grpo", "optimizer", "evaluation"):
        assert f"\n{section} (config fields" in text
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--advantage=foo"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --advantage='foo' is not one of: zscore, rank, mean, rloo, none, remax"


def test_the_package_installs_and_imports_from_another_directory(tmp_path):
    """``pip install -e .`` into a fresh virtual environment; the package then imports from elsewhere, and
    the test suite's own interpreter finds it from another directory too (no path patching)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('leverjax').origin, "
                                      "u.find_spec('experiments'))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60, env=clean)
    # experiments/ is read by path (leverjax.run.registry), not installed as a package of that common name
    assert where.stdout.split() == [os.path.join(ROOT, "leverjax", "__init__.py"), "None"], where.stderr
    here = subprocess.run([sys.executable, "-c", "import leverjax.core.config; from leverjax.run import registry; "
                           "registry.get('scheme5_6'); print(leverjax.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert here.returncode == 0 and here.stdout.strip() == os.path.join(ROOT, "leverjax", "__init__.py"), here.stderr
