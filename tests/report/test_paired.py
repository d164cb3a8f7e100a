"""The VLM evaluation's paired statistics against scipy and closed forms."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from leverjax.report import paired, power


def test_one_seed_bootstrap_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.choice([0.0, 0.3, 0.6, 1.0], size=400, p=[0.5, 0.1, 0.1, 0.3])
    b = np.clip(a + rng.normal(0.05, 0.3, size=400), 0, 1)
    d = (a - b)[None, :]
    mean, lo, hi = paired.crossed_bootstrap(d, resamples=20000, seed=1)
    ref = scipy_stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True,
                                n_resamples=20000, method="percentile", random_state=2).confidence_interval
    width = ref.high - ref.low
    assert mean == pytest.approx(np.mean(a - b))
    assert lo == pytest.approx(ref.low, abs=0.05 * width) and hi == pytest.approx(ref.high, abs=0.05 * width)


def test_crossed_bootstrap_spread_matches_the_two_way_variance():
    rng = np.random.default_rng(3)
    s, n = 8, 600
    x = 1.0 + rng.normal(0, 1.0, (s, 1)) + rng.normal(0, 2.0, (1, n)) + rng.normal(0, 0.5, (s, n))
    _, lo, hi = paired.crossed_bootstrap(x, resamples=20000, seed=4)
    se = power.standard_error(power.variance_components(x), s, n)
    # the pigeonhole bootstrap counts the residual term a little more than the model does (conservative);
    # with a small residual its spread is the two-way model's standard error
    assert (hi - lo) / (2 * 1.96) == pytest.approx(se, rel=0.2)


def test_constant_differences_have_a_zero_width_interval_and_few_questions_none():
    assert paired.crossed_bootstrap(np.full((3, 50), 2.0))[1:] == (2.0, 2.0)
    assert all(np.isnan(paired.crossed_bootstrap(np.ones((3, 1)))[1:]))


def test_mcnemar_exact_by_hand():
    # 1 question solved by a only, 9 by b only: p = 2 · P(X ≤ 1 | n = 10, ½) = 2 · 11 / 1024
    a = np.array([1.0] + [0.0] * 9 + [0.3] * 5 + [0.0] * 5)
    b = np.array([0.0] + [1.0] * 9 + [0.6] * 5 + [0.0] * 5)
    out = paired.mcnemar(a, b)
    assert (out["a_only"], out["b_only"]) == (1, 9)
    assert out["p"] == pytest.approx(22 / 1024)
    assert paired.mcnemar(a, a)["p"] == 1.0
