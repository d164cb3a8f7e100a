"""How small an effect a grid could detect, and how many seeds × questions an effect needs.

    python -m leverjax.report.power DIR --delta=0.5 [--baseline=rce_only] [--compare=scheme5]
    python -m leverjax.report.power DIR --questions=200,800   # the smallest detectable Δ at the grid's seeds

On synthetic data each run records the realised VQA score of every counted test question
(``runs/<group>/results.json``, ``questions``; :func:`leverjax.data.synth.realised_accuracy`): what a
researcher scoring with the VLM sees. A comparison of a variant A with a baseline B pairs the two by seed and
question: ``d[s, i]`` is A's realised score minus B's on question i in seed s, averaged over shots 1–4 (the
report's headline). The estimate of the effect Δ is the mean of ``d`` over S seeds and N questions.

A two-way random-effects model, ``d[s, i] = Δ + a_s + b_i + e_si`` (seeds, questions and their interaction
independent, variances ``σ²_seed``, ``σ²_question``, ``σ²_residual``), gives the variance of that estimate for
a new study of S seeds and N fresh questions::

    Var = σ²_seed / S + σ²_question / N + σ²_residual / (S·N)

The components are the ANOVA (method of moments) estimates from the grid's own S × N matrix, negatives set
to 0. The smallest effect a paired two-sided test at level α detects with probability ``power`` is, in the
normal approximation, ``(z_{1−α/2} + z_{power}) · √Var``: 2.80 standard errors at 80% power and α = 0.05.
With few seeds the components themselves are uncertain; the figures are estimates of the design's size, not
guarantees.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from leverjax.errors import ConfigError
from leverjax.report.load import group_results

POWER = 0.8
ALPHA = 0.05
SEED_OPTIONS = (2, 3, 5, 10, 20, 50)
QUESTION_LIMIT = 10**6  # more questions than this: "never" (the seed term alone is too large)


def z_factor(power: float = POWER, alpha: float = ALPHA) -> float:
    """``z_{1−α/2} + z_{power}``: the minimum detectable effect in standard errors."""
    return float(scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power))


def variance_components(d: np.ndarray) -> dict[str, float]:
    """ANOVA estimates of ``σ²_seed``, ``σ²_question`` and ``σ²_residual`` from ``d`` [S, N] (two-way layout,
    one observation per cell; negative estimates set to 0). S = 1 leaves the seed term unknown (NaN); N = 1
    the question term."""
    d = np.asarray(d, np.float64)
    s, n = d.shape
    grand = d.mean()
    seed_means, question_means = d.mean(1), d.mean(0)
    ms_seed = n * np.sum((seed_means - grand) ** 2) / (s - 1) if s > 1 else math.nan
    ms_question = s * np.sum((question_means - grand) ** 2) / (n - 1) if n > 1 else math.nan
    resid = d - seed_means[:, None] - question_means[None, :] + grand
    ms_resid = np.sum(resid ** 2) / ((s - 1) * (n - 1)) if s > 1 and n > 1 else 0.0
    return {"seed": max((ms_seed - ms_resid) / n, 0.0) if s > 1 else math.nan,
            "question": max((ms_question - ms_resid) / s, 0.0) if n > 1 else math.nan,
            "residual": float(ms_resid)}


def standard_error(components: Mapping[str, float], seeds: int, questions: int) -> float:
    """Standard error of the mean paired difference over ``seeds`` × ``questions`` (module docstring)."""
    return math.sqrt(components["seed"] / seeds + components["question"] / questions
                     + components["residual"] / (seeds * questions))


def minimum_detectable_effect(components: Mapping[str, float], seeds: int, questions: int,
                              power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest Δ a paired two-sided test at level ``alpha`` detects with probability ``power``."""
    return z_factor(power, alpha) * standard_error(components, seeds, questions)


def questions_needed(components: Mapping[str, float], delta: float, seeds: int, power: float = POWER,
                     alpha: float = ALPHA) -> int | None:
    """The fewest questions with which ``seeds`` seeds detect ``delta``; None when no number of questions
    does (the seed term alone is too large)."""
    budget = (abs(delta) / z_factor(power, alpha)) ** 2 - components["seed"] / seeds
    if budget <= 0:
        return None
    n = math.ceil((components["question"] + components["residual"] / seeds) / budget)
    return max(n, 1) if n <= QUESTION_LIMIT else None


# -- reading a grid -------------------------------------------------------------------------------------------


def question_scores(directory: str) -> dict[str, dict[int, dict[int, float]]]:
    """variant -> seed -> {query row: realised score averaged over the recorded shots}, from the finished
    runs' ``results.json``; empty when no run recorded questions (real data, or older results)."""
    out: dict[str, dict[int, dict[int, float]]] = {}
    for content in group_results(directory):
        for run in content.get("runs", []):
            q = run.get("questions")
            if not q:
                continue
            shots = sorted(k for k in q if k.startswith("realised_acc_"))
            mean = np.mean([q[k] for k in shots], axis=0)
            out.setdefault(run["variant"], {})[int(run["seed"])] = dict(zip(q["queries"], mean.tolist()))
    return out


def paired_differences(scores: Mapping[str, Mapping[int, Mapping[int, float]]], variant: str,
                       baseline: str) -> np.ndarray:
    """``d`` [S, N]: ``variant`` minus ``baseline`` on their common seeds and questions (points, ×100)."""
    a, b = scores[variant], scores[baseline]
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return np.zeros((0, 0))
    questions = sorted(set.intersection(*[set(a[s]) & set(b[s]) for s in seeds]))
    return 100.0 * np.array([[a[s][i] - b[s][i] for i in questions] for s in seeds], np.float64)


def comparisons(directory: str, baseline: str) -> list[dict]:
    """Every variant against ``baseline``: the observed Δ of realised accuracy (points), the seeds and questions
    it rests on, the variance components and the minimum detectable effect at that size."""
    scores = question_scores(directory)
    if baseline not in scores:
        return []
    out = []
    for variant in scores:
        if variant == baseline:
            continue
        d = paired_differences(scores, variant, baseline)
        s, n = d.shape
        if s < 2 or n < 2:
            out.append({"variant": variant, "seeds": s, "questions": n, "delta": float(d.mean()) if d.size else None,
                        "mde": None, "components": None})
            continue
        comp = variance_components(d)
        out.append({"variant": variant, "seeds": s, "questions": n, "delta": float(d.mean()),
                    "mde": minimum_detectable_effect(comp, s, n), "components": comp})
    return out


def design_table(components: Mapping[str, float], delta: float, seeds: Sequence[int] = SEED_OPTIONS) -> list[tuple]:
    """(seeds, questions needed or None) for each seed count."""
    return [(s, questions_needed(components, delta, s)) for s in seeds]


def _cli() -> None:
    from absl import flags

    from leverjax import command as command_lib

    flags.DEFINE_float("delta", None, "The effect to detect, in points of realised accuracy (e.g. 0.5): prints the "
                       "questions each number of seeds needs.")
    flags.DEFINE_list("questions", None, "Test-set sizes (e.g. 200,800): prints the smallest effect the grid's "
                      "number of seeds detects with that many fresh questions.")
    flags.DEFINE_string("baseline", None, "The variant compared against (default: rce_only if the grid has it, "
                        "else its first variant).")
    flags.DEFINE_string("compare", None, "Only this variant (default: every other variant).")
    FLAGS = flags.FLAGS

    def main(argv: Sequence[str]) -> None:
        if len(argv) < 2:
            raise ConfigError("give a results directory (python -m leverjax.report.power DIR --delta=0.5)")
        directory = argv[1]
        if not os.path.isdir(os.path.join(directory, "runs")):
            raise ConfigError(f"{directory} has no runs/ (is it a launcher results directory?)")
        if FLAGS.delta is None and not FLAGS.questions:
            raise ConfigError("give --delta=POINTS (the questions an effect needs) or --questions=N[,N...] (the "
                              "smallest detectable effect at N questions), or both")
        if FLAGS.delta is not None and (not FLAGS.delta or not math.isfinite(FLAGS.delta)):
            raise ConfigError(f"--delta={FLAGS.delta} must be a nonzero number of points")
        sizes = []
        for text in FLAGS.questions or ():
            if not text.strip().isdigit() or int(text) < 1:
                raise ConfigError(f"--questions: {text!r} is not a positive whole number of questions")
            sizes.append(int(text))
        scores = question_scores(directory)
        if not scores:
            raise ConfigError(f"{directory}: no run recorded per-question realised scores (they need synthetic "
                              f"data of generator version 4 or later)")
        baseline = FLAGS.baseline or ("rce_only" if "rce_only" in scores else next(iter(scores)))
        if baseline not in scores:
            raise ConfigError(f"--baseline={baseline} is not a variant of {directory}; its variants: "
                              f"{', '.join(scores)}")
        rows = [r for r in comparisons(directory, baseline) if FLAGS.compare in (None, r["variant"])]
        if not rows:
            raise ConfigError(f"--compare={FLAGS.compare} is not a variant of {directory} other than the baseline")
        if FLAGS.delta is not None:
            print(f"Seeds × questions needed to detect Δ = {FLAGS.delta:g} points of realised accuracy (mean over "
                  f"shots) against {baseline}, at {POWER:.0%} power, paired, two-sided α = {ALPHA}:\n")
        else:
            print(f"Smallest effect detectable (points of realised accuracy, mean over shots) against {baseline}, "
                  f"at {POWER:.0%} power, paired, two-sided α = {ALPHA}:\n")
        for r in rows:
            if r["components"] is None:
                print(f"{r['variant']}: needs at least 2 common seeds and 2 questions (has {r['seeds']} × "
                      f"{r['questions']})\n")
                continue
            c = r["components"]
            print(f"{r['variant']} (grid: Δ {r['delta']:+.2f} on {r['seeds']} seeds × {r['questions']} questions; "
                  f"smallest detectable {r['mde']:.2f}; σ seed {math.sqrt(c['seed']):.2f}, question "
                  f"{math.sqrt(c['question']):.2f}, residual {math.sqrt(c['residual']):.2f} points)")
            for n in sizes:
                print(f"  {r['seeds']} seeds × {n:,} questions: smallest detectable "
                      f"{minimum_detectable_effect(c, r['seeds'], n):.2f}")
            if FLAGS.delta is not None:
                for seeds, n in design_table(c, FLAGS.delta):
                    print(f"  {seeds:>3} seeds: " + (f"{n:,} questions" if n is not None else
                                                     "no number of questions (the seed-to-seed spread alone is "
                                                     "too large)"))
            print()

    command_lib.run(main, command="python -m leverjax.report.power", positional=("directory",),
                    about="How many seeds × test questions an effect of --delta points needs, and the smallest effect "
                          "the grid's seeds detect at --questions test questions, estimated from the grid's own "
                          "per-seed and per-question variance of realised accuracy.")


if __name__ == "__main__":
    _cli()
