"""The VLM evaluation's report (``OUT/report.md`` of ``python -m leverjax.vlm_eval``) from its summary."""
from __future__ import annotations

import math

from leverjax.report.load import REFERENCE_NAMES


def _f(x, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.{digits}f}"


def _acc(cell: dict) -> str:
    if cell["low"] is None or not math.isfinite(cell["low"]):
        return f"{cell['mean']:.2f}"
    return f"{cell['mean']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]"


def _scorer(identity: dict) -> str:
    name = identity.get("scorer") or identity.get("encoder") or "?"
    if "num_beams" in identity:
        return (f"{name} ({identity.get('dtype')}, {identity['num_beams']} beams, at most "
                f"{identity['max_new_tokens']} new tokens)")
    return str(name)


def headline(summary: dict) -> str:
    """A few lines for the console: the scorer, the questions, and each variant's mean accuracy."""
    lines = [f"scored {len(summary['runs'])} selections of {summary['questions']} {summary['split']} questions "
             f"with {_scorer(summary['scorer'])}; {summary['cache']['calls']} scorer calls "
             f"({summary['cache']['unique_prompts']} unique prompts, {summary['cache']['requests']} asked)"]
    for variant, acc in summary["accuracy"].items():
        d = summary["paired"].get(variant, {}).get("mean")
        delta = f"   Δ to {summary['baseline']} {_f(d['delta'])} [{_f(d['low'])}, {_f(d['high'])}]" if d else ""
        lines.append(f"  {variant:<40} {_acc(acc['mean'])}{delta}")
    cons = summary.get("oracle_consistency")
    if cons:
        lines.append(f"oracle consistency: largest difference to the grid's own oracle accuracy "
                     f"{cons['max_abs_diff']:.2e} over {cons['compared']} run × shot values")
    return "\n".join(lines)


def render(summary: dict) -> str:
    shots = [str(n) for n in summary["shots"]]
    out = [
        "# VLM evaluation",
        "",
        f"Scorer: {_scorer(summary['scorer'])}. "
        + (f"Results: `{summary['results']}` ({summary['params']} parameters). " if summary["results"] else
           f"Selector: `{summary['checkpoint']}`. ") +
        f"Questions: {summary['questions']} of the {summary['split']} split"
        + (f" (a subset, seed {summary['questions_seed']}, the same for every run)" if summary["questions_seed"]
           is not None else "") + ".",
        "",
        "Accuracy in points, mean over seeds and questions, with its 95% interval from a bootstrap over seeds "
        "and questions (percentile; with one seed, over questions).",
        "",
        "| selection | seeds | " + " | ".join(f"acc@{n}" for n in shots) + " | mean |",
        "|---|---:|" + "---:|" * (len(shots) + 1),
    ]
    for variant, acc in summary["accuracy"].items():
        label = REFERENCE_NAMES.get(variant, f"`{variant}`")
        out.append(f"| {label} | {acc['mean']['seeds']} | " + " | ".join(_acc(acc[n]) for n in shots)
                   + f" | {_acc(acc['mean'])} |")
    base = summary["baseline"]
    out += ["", f"## Paired differences to `{base}`", "",
            "Δ in points (selection − baseline), paired by seed and question; 95% interval from the bootstrap "
            "over seeds and questions; MDE: the smallest Δ this design (seeds × questions) detects at 80% power "
            "(α = 0.05); with one seed it leaves out the seed variance, and the exact McNemar test (a question "
            "counts as solved when its accuracy is above 0) is given.", "",
            "| selection | " + " | ".join(f"Δ@{n}" for n in shots) + " | Δ mean | MDE (mean) | McNemar p (@1) |",
            "|---|" + "---:|" * (len(shots) + 3)]
    for variant, rows in summary["paired"].items():
        label = REFERENCE_NAMES.get(variant, f"`{variant}`")
        cells = [f"{_f(rows[n]['delta'])} [{_f(rows[n]['low'])}, {_f(rows[n]['high'])}]" for n in [*shots, "mean"]]
        mc = rows[shots[0]].get("mcnemar")
        mde = f"{rows['mean']['mde']:.2f}" + ("" if rows["mean"]["mde_includes_seeds"] else " (one seed)")
        out.append(f"| {label} | " + " | ".join(cells) + f" | {mde} | " + (f"{mc['p']:.3g}" if mc else "—") + " |")
    c = summary["cache"]
    out += ["", "## Cost", "",
            f"{c['requests']} prompts asked, {c['unique_prompts']} unique; {c['calls']} scored in this session "
            f"(the rest from the prompt cache"
            + (f" `{c['file']}`" if c["file"] else "") + "). Runs and seeds that pick the same demonstrations "
            "share one scorer call.", ""]
    cons = summary.get("oracle_consistency")
    if cons:
        out += [f"Oracle consistency: the largest difference between these accuracies and the grid's own final "
                f"oracle accuracies is {cons['max_abs_diff']:.2e} ({cons['compared']} run × shot values; "
                f"{cons['note']}).", ""]
    return "\n".join(out)
