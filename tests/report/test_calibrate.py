"""Simulator presets (determinism, schema, errors) and a tiny calibration run (directions, not numbers)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.data import dataset_from_arrays, dataset_to_arrays, synth
from leverjax.errors import ConfigError
from leverjax.report import calibrate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(num_examples=500, num_queries=60, num_test_queries=20, pool_size=12, dim=16)


@pytest.mark.parametrize("preset", ["okvqa", "vqav2"])
def test_presets_are_deterministic_and_valid(preset):
    a = synth.make_synthetic(preset=preset, seed=4, **SMALL)
    b = synth.make_synthetic(preset=preset, seed=4, **SMALL)
    for key in ("emb", "pool_ids", "traj", "acc", "gt_prob", "rel", "gen_method", "split"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    for key in a.oracle:
        np.testing.assert_array_equal(a.oracle[key], b.oracle[key])
    dataset_from_arrays(dataset_to_arrays(a), source="preset")  # the schema validation
    gen = a.meta["generator"]
    assert gen["preset"] == preset and gen["params"]["shot_norm"] == pytest.approx(synth.PRESETS[preset].params["shot_norm"])
    assert set(gen["world"]) == set(synth.WORLD_NAMES)


def test_presets_differ_and_the_default_is_okvqa():
    assert synth.DEFAULT_PRESET == "okvqa"
    ok = synth.make_synthetic(seed=1, **SMALL)
    vq = synth.make_synthetic(preset="vqav2", seed=1, **SMALL)
    assert ok.meta["generator"]["preset"] == "okvqa"
    assert not np.array_equal(ok.oracle["quality"], vq.oracle["quality"])
    assert vq.summary()["positive_ratio"] > ok.summary()["positive_ratio"] + 0.08  # VQAv2 is easier
    assert synth.PRESETS["okvqa"].sizes["num_examples"] == 9009


def test_v1_preset_keeps_version_1_of_the_generator():
    ds = synth.make_synthetic(preset="v1", seed=0, **SMALL)
    p = ds.meta["generator"]["params"]
    assert p["shot_norm"] == 0.0 and p["shot_cost"] == pytest.approx(0.15) and p["redundancy_scale"] == 2.0
    # a parameter vector of version 1 (7 entries, no shot_norm) gives the same oracle as shot_norm = 0
    old = {**ds.oracle, "params": ds.oracle["params"][:7]}
    q, d = ds.query_ids[:8], np.maximum(ds.pool_ids[:8, :3], 0)
    np.testing.assert_allclose(synth.oracle_accuracy_np(old, q, d), synth.oracle_accuracy_np(ds.oracle, q, d))
    np.testing.assert_allclose(np.asarray(synth.oracle_accuracy(old, q, d)), synth.oracle_accuracy_np(ds.oracle, q, d),
                               rtol=1e-5, atol=1e-6)


def test_unknown_preset_and_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown synthetic data preset 'okvq'; valid: okvqa, vqav2, v1"):
        synth.make_synthetic(preset="okvq")
    with pytest.raises(ConfigError, match="unknown synthetic data parameter"):
        synth.make_synthetic(params={"shot_nrom": 1.0}, **SMALL)
    with pytest.raises(ConfigError, match="unknown synthetic data preset"):
        calibrate.calibrate("nope", seeds=2, out="/nonexistent/never-written")


def test_command_lines_fail_in_one_line_on_a_bad_preset(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    for module, extra in (("leverjax.data.synth", [f"--out={tmp_path / 'x.npz'}"]), ("leverjax.data.calibrate", [])):
        res = subprocess.run([sys.executable, "-m", module, "--preset=bogus", *extra], capture_output=True,
                             text=True, env=env)
        assert res.returncode == 2 and res.stderr.startswith("error: unknown synthetic data preset 'bogus'")
        assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1


def test_vqav2_curve_falls_more_than_okvqa_for_every_reference():
    """The shape of the value model, without training: every reference selection loses more from 1 to 4
    shots on vqav2 than on okvqa (exact expectations on the test queries)."""
    from leverjax.core import baselines

    sizes = dict(num_examples=2000, num_queries=40, num_test_queries=60)
    drops = {}
    for preset in ("okvqa", "vqav2"):
        ds = synth.make_synthetic(preset=preset, seed=0, **sizes)
        refs = baselines.oracle_references(ds, baselines.evaluation_queries(ds, "test"), samples=64)
        drops[preset] = {k: refs[k]["acc"][4] - refs[k]["acc"][1] for k in ("similarity", "oracle_greedy")}
    for k in drops["okvqa"]:
        assert drops["vqav2"][k] < drops["okvqa"][k] - 0.01, (k, drops)


TINY = dict(num_examples=900, num_queries=250, num_test_queries=60, pool_size=16, dim=32, max_trajectories=8)


def test_tiny_calibration_directions(tmp_path):
    """A tiny okvqa calibration through the launcher: the table's rows, and the directions that hold at this
    size (the trained selector beats random selection, by more than it beats similarity retrieval). Gains over
    retrieval and from SFT need the full size (about +0.4 and +0.1 points here; see README)."""
    rows = calibrate.calibrate("okvqa", seeds=2, out=str(tmp_path / "cal"), sizes=TINY,
                               overrides={"sft_epochs": 6, "rce_epochs": 1, "hidden": 32},
                               printer=lambda s: None)
    names = [r.phenomenon for r in rows]
    assert len(rows) == 6 and names[0].startswith("trained selector − similarity retrieval, 1 shot")
    assert names[4].startswith("shot curve") and names[5].startswith("SFT vs its initialisation")
    over_similarity, over_random = (float(rows[i].value.split()[0]) for i in (0, 1))
    assert over_random > 1.0 and over_random > over_similarity + 1.0 and rows[1].passed
    assert len(rows[4].numbers["curve"]) == 4 and all(len(v) == 2 for v in rows[4].numbers["curve"].values())
    assert "→" in rows[5].value  # the SFT row was measured (before → after)
    text = calibrate.format_rows("okvqa", rows, 2)
    assert "| phenomenon | report | simulator | tolerance | pass |" in text
    assert os.path.exists(tmp_path / "cal" / "full" / "baselines.json")
