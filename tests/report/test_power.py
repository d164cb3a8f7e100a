"""The power computation against closed forms on planted normal data, and the command line."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from leverjax.report import power


def planted(seeds, questions, sd_seed, sd_question, sd_resid, delta=0.0, rng=None):
    rng = rng or np.random.default_rng(0)
    return (delta + sd_seed * rng.standard_normal((seeds, 1)) + sd_question * rng.standard_normal((1, questions))
            + sd_resid * rng.standard_normal((seeds, questions)))


def test_the_minimum_detectable_effect_is_the_closed_form():
    comp = {"seed": 0.5 ** 2, "question": 30.0 ** 2, "residual": 20.0 ** 2}
    se = math.sqrt(0.25 / 5 + 900 / 800 + 400 / 4000)
    assert power.minimum_detectable_effect(comp, 5, 800) == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)
    assert power.z_factor() == pytest.approx(2.801585, abs=1e-5)
    # only seeds vary: 2.80 σ/√S
    assert power.minimum_detectable_effect({"seed": 4.0, "question": 0.0, "residual": 0.0}, 16, 10) == \
        pytest.approx(power.z_factor() * 2.0 / 4.0)


def test_the_components_recover_planted_variances():
    d = planted(40, 400, sd_seed=1.5, sd_question=3.0, sd_resid=2.0, rng=np.random.default_rng(1))
    comp = power.variance_components(d)
    assert comp["seed"] == pytest.approx(1.5 ** 2, rel=0.35)
    assert comp["question"] == pytest.approx(3.0 ** 2, rel=0.2)
    assert comp["residual"] == pytest.approx(2.0 ** 2, rel=0.05)


def test_the_detection_rate_at_the_minimum_detectable_effect_is_the_power():
    """Studies of 5 seeds × 200 questions with the effect set to the MDE reject H0 (|mean|/SE > 1.96) about
    80% of the time: the closed form is what simulation of the model gives."""
    comp = {"seed": 0.8 ** 2, "question": 6.0 ** 2, "residual": 4.0 ** 2}
    mde = power.minimum_detectable_effect(comp, 5, 200)
    se = power.standard_error(comp, 5, 200)
    rng = np.random.default_rng(2)
    hits = [abs(planted(5, 200, 0.8, 6.0, 4.0, delta=mde, rng=rng).mean()) / se > 1.959964 for _ in range(2000)]
    assert np.mean(hits) == pytest.approx(0.80, abs=0.03)


def test_questions_needed_inverts_the_mde():
    comp = {"seed": 0.3 ** 2, "question": 40.0 ** 2, "residual": 30.0 ** 2}
    n = power.questions_needed(comp, 2.0, 5)
    assert power.minimum_detectable_effect(comp, 5, n) <= 2.0 < power.minimum_detectable_effect(comp, 5, n - 1)
    # a seed spread larger than the effect allows: no number of questions is enough with 2 seeds
    assert power.questions_needed({"seed": 4.0, "question": 1.0, "residual": 1.0}, 1.0, 2) is None


def write_grid(directory, scores):
    """runs/g01/results.json with per-question scores {variant: {seed: [scores]}} at 1 and 2 shots."""
    runs = []
    for variant, by_seed in scores.items():
        for seed, values in by_seed.items():
            runs.append({"variant": variant, "seed": seed, "questions": {
                "queries": list(range(len(values))), "realised_acc_1": values, "realised_acc_2": values}})
    os.makedirs(os.path.join(directory, "runs", "g01"))
    with open(os.path.join(directory, "runs", "g01", "results.json"), "w") as f:
        json.dump({"runs": runs}, f)


def test_comparisons_pair_by_seed_and_question(tmp_path):
    rng = np.random.default_rng(3)
    base = {s: rng.choice([0.0, 1.0], 50).tolist() for s in range(3)}
    better = {s: [min(1.0, v + (0.3 if i % 10 == 0 else 0.0)) for i, v in enumerate(base[s])] for s in range(3)}
    write_grid(str(tmp_path), {"rce_only": base, "scheme5": better})
    (row,) = power.comparisons(str(tmp_path), "rce_only")
    d = power.paired_differences(power.question_scores(str(tmp_path)), "scheme5", "rce_only")
    assert d.shape == (3, 50) and row["delta"] == pytest.approx(d.mean())
    assert row["mde"] == pytest.approx(power.minimum_detectable_effect(power.variance_components(d), 3, 50))


def test_the_command_answers_and_fails_in_one_line(tmp_path):
    rng = np.random.default_rng(4)
    write_grid(str(tmp_path), {v: {s: rng.choice([0.0, 1.0], 80).tolist() for s in range(4)}
                               for v in ("rce_only", "scheme5")})
    run = lambda *a: subprocess.run([sys.executable, "-m", "leverjax.report.power", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    res = run(str(tmp_path), "--delta=5")
    assert res.returncode == 0, res.stderr
    assert "against rce_only" in res.stdout and "scheme5 (grid:" in res.stdout and " 10 seeds:" in res.stdout
    # the smallest detectable effect at other test sizes, with the grid's 4 seeds: the closed form
    res = run(str(tmp_path), "--questions=200,800")
    assert res.returncode == 0, res.stderr
    comp = power.comparisons(str(tmp_path), "rce_only")[0]["components"]
    for n in (200, 800):
        mde = power.minimum_detectable_effect(comp, 4, n)
        assert f"4 seeds × {n} questions: smallest detectable {mde:.2f}" in res.stdout, res.stdout
    assert power.minimum_detectable_effect(comp, 4, 800) < power.minimum_detectable_effect(comp, 4, 200)
    for bad in ([str(tmp_path), "--delta=5", "--baseline=nope"], [str(tmp_path / "nowhere"), "--delta=1"],
                [str(tmp_path)], [str(tmp_path), "--questions=200,many"]):
        res = run(*bad)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
