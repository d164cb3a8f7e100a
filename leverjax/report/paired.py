"""Statistics of per-question scores over seeds × questions: the VLM evaluation's intervals and tests.

A score matrix ``x[s, i]`` holds seed s's score on question i (an accuracy, or a paired difference
``A − B`` of two selectors on the same seed and question). Seeds and questions are both samples: a new
study draws other seeds and other questions.

* :func:`crossed_bootstrap`: the percentile interval of the mean of ``x`` when seeds and questions are
  resampled independently, with replacement (the "pigeonhole" bootstrap of a crossed design; slightly
  conservative: its variance counts the interaction term twice, Owen 2007). With one seed it is the usual
  bootstrap over questions, the interval ``scipy.stats.bootstrap`` gives.
* :func:`mcnemar`: the exact McNemar test of two selectors on the same questions (one seed): a question is
  solved when its VQA accuracy is above 0 (the RL data's ``correct``); the discordant questions follow
  Binomial(b + c, 1/2) under no difference (``scipy.stats.binomtest``).
* the smallest detectable effect: :mod:`leverjax.report.power` on the difference matrix.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


def crossed_bootstrap(x, *, resamples: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
                      ) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``x`` [S, N] (module docstring); ``low``/``high`` NaN when N < 2."""
    x = np.asarray(x, np.float64)
    s, n = x.shape
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    # how often each seed and each question is drawn in each resample: the resample's mean is ws @ x @ wq / (S·N)
    ws = rng.multinomial(s, np.full(s, 1.0 / s), size=resamples) if s > 1 else np.ones((resamples, 1))
    wq = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = np.einsum("bs,sn,bn->b", ws, x, wq) / (s * n)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return mean, float(low), float(high)


def mcnemar(a, b) -> dict:
    """Exact McNemar test of scores ``a`` and ``b`` [N] on the same questions: ``a_only`` (questions solved by
    ``a`` only), ``b_only`` (by ``b`` only) and the two-sided ``p``."""
    sa, sb = np.asarray(a) > 0, np.asarray(b) > 0
    only_a, only_b = int(np.sum(sa & ~sb)), int(np.sum(~sa & sb))
    p = 1.0 if only_a + only_b == 0 else float(scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"a_only": only_a, "b_only": only_b, "p": p}
