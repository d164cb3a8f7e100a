"""The config describes itself: every field's declared kind matches how the pipeline uses it, and the
flags, help, validation, grouping and prefix key derived from the declarations behave."""
import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from leverjax.core import advantages
from leverjax.core import config as config_lib
from leverjax.core import losses
from leverjax.core import model
from leverjax.core import optim
from leverjax.core import rewards
from leverjax.data import synth
from leverjax.data.device import DeviceData
from leverjax.errors import ConfigError
from leverjax.core.evaluate import Evaluator
from leverjax.run.engine import Runner
from leverjax.core.train import Pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = config_lib.replace(config_lib.Config(), dict(
    hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=1, sft_batch_size=16, rce_batch_size=8, grpo_batch_size=8,
    eval_chunk=64, eval_shots=2))


def perturbed(name: str, value):
    """Another valid value of field ``name``."""
    m = config_lib.meta(name)
    if m["choices"]:
        return next(c for c in m["choices"] if c != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return 0.3 if value <= 0 else (value * 0.5 if m["unit"] else value * 1.5 + 0.01)
    return {"best_metric": "val_loss" if value != "val_loss" else "val_expected_reward", "data": "other.npz", "workdir": "elsewhere"}[name]


def test_choice_lists_match_the_modules_that_implement_them():
    assert config_lib.meta("advantage")["choices"] == advantages.ADVANTAGE_METHODS
    assert config_lib.meta("top_k_ties")["choices"] == advantages.TOP_K_TIES
    assert config_lib.meta("kl_estimator")["choices"] == losses.KL_ESTIMATORS
    assert config_lib.meta("reward_mode")["choices"] == rewards.REWARD_MODES
    assert config_lib.meta("reward_normalization")["choices"] == rewards.NORMALIZATIONS
    assert config_lib.SCHEDULES == optim.SCHEDULES
    assert config_lib.meta("selector")["choices"] == tuple(model.PRESETS)
    for name, registry in (("update", model.UPDATES), ("scoring", model.SCORINGS), ("set_term", model.SET_TERMS),
                           ("cand_encoder", model.CAND_ENCODERS), ("decoder", model.DECODERS)):
        assert config_lib.meta(name)["choices"] == ("",) + registry
    for name, registry in (("mmr_reduction", model.MMR_REDUCTIONS), ("refine_type", model.REFINE_TYPES),
                           ("refine_outside", model.REFINE_OUTSIDE)):
        assert config_lib.meta(name)["choices"] == registry


@pytest.mark.parametrize("name", config_lib.FIELDS)
def test_declared_kind_matches_the_traced_and_static_parts(name):
    value = getattr(BASE, name)
    other = dataclasses.replace(BASE, **{name: perturbed(name, value)})
    kind = config_lib.meta(name)["kind"]
    hp_changed = config_lib.hyperparameters(BASE) != config_lib.hyperparameters(other)
    sig_changed = config_lib.static_signature(BASE) != config_lib.static_signature(other)
    assert (hp_changed, sig_changed) == {"sweep": (True, False), "static": (False, True),
                                         "run": (False, False)}[kind], name


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
    assert "one of zscore, rank, mean, rloo, none" in block and "default 'rank'" in block
    for section in ("selector", "sft", "rce", "grpo", "optimizer", "evaluation"):
        assert f"\n{section} (config fields" in text
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "--advantage=foo"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --advantage='foo' is not one of: zscore, rank, mean, rloo, none"


def test_the_package_installs_and_imports_from_another_directory(tmp_path):
    """``pip install -e .`` into a fresh virtual environment; the package then imports from elsewhere, and
    the test suite's own interpreter finds it from another directory too (no path patching)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    where = subprocess.run([py, "-c", "import importlib.util as u; print(u.find_spec('leverjax').origin, "
                                      "u.find_spec('experiments'))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # experiments/ is read by path (leverjax.run.registry), not installed as a package of that common name
    assert where.stdout.split() == [os.path.join(ROOT, "leverjax", "__init__.py"), "None"], where.stderr
    here = subprocess.run([sys.executable, "-c", "import leverjax.core.config; from leverjax.run import registry; "
                           "registry.get('scheme5_6'); print(leverjax.__file__)"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert here.returncode == 0 and here.stdout.strip() == os.path.join(ROOT, "leverjax", "__init__.py"), here.stderr
