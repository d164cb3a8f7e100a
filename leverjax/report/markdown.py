"""The grid report: ``report.md`` and ``plots/*.png`` from a results directory.

    python -m leverjax.report results/all [--baseline=rce_only] [--noplots]

Everything is recomputed from the results directory, so the report can be regenerated at any time (e.g.
with another baseline): ``metrics.csv`` (every run × epoch × metric and the final test metrics),
``grid.json`` (the runs' configs, the experiments' descriptions and the launch's provenance),
``baselines.json`` (the reference selections) and ``status/`` (why runs failed). A *run* here is a variant
(experiment plus sweep values); its seeds are replicates.

Statistics: every interval is a 95% Student t interval of the mean over seeds. Proportions (accuracies,
shares of queries) use the t interval clipped to their range [0, 1] (written ``m [low, high]`` when the clip
binds). A Δ is paired: for each seed, the run's value minus the baseline's on the same seed, then the mean
and t interval of those differences. Numbers are rounded to the interval's precision (two significant
digits of its half width). With fewer than 3 seeds no difference is starred or called a finding.

Sections: a summary computed from the numbers; the runs and what each changes; the researchers' table
(oracle accuracy at shots 1–4 on synthetic data, expected reward on real data) with the reference
selections; final and best-epoch test metrics; a comparison at equal GRPO epochs on val; plots (a forest
plot of the headline Δ, overviews by GRPO epoch, per-run curves; matplotlib); metric definitions;
provenance; failed runs.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

from leverjax.core import config as config_lib
from leverjax.core import stats
from leverjax.errors import ConfigError
from leverjax.fileio import write_json_atomic, write_text_atomic
from leverjax.report import power, validity
from leverjax.report.estimates import Estimate, _mean, _unsigned_zero, equal_epoch_columns, estimate, paired_at
from leverjax.report.load import (
    ORACLE_MEAN, REFERENCE_NAMES, Context, Run, _context, _ref_acc, _ref_mean, final_splits, grid_runs, load_failures,
    oracle_shots, scorer_call_rows, variant_configs,
)
from leverjax.report.plots import _forest_panels, write_plots

# (metric, label, scale, bounds of the scaled value or None, digits without a CI)
_TABLE_METRICS = (("loss", "loss", 1.0, None, 3), ("expected_reward", "E[r]", 1.0, None, 3),
                  ("top1_reward", "top-1 r", 1.0, None, 3), ("greedy_labelled", "labelled", 1.0, (0, 1), 3),
                  ("greedy_labelled_reward", "labelled r", 1.0, None, 3),
                  ("changed_vs_ref", "changed", 1.0, (0, 1), 3), ("redundancy", "redund.", 1.0, (-1, 1), 3),
                  ("oracle_acc_1", "acc@1 %", 100.0, (0, 100), 2), ("oracle_acc_2", "acc@2 %", 100.0, (0, 100), 2),
                  ("oracle_acc_3", "acc@3 %", 100.0, (0, 100), 2), ("oracle_acc_4", "acc@4 %", 100.0, (0, 100), 2))


# -- numbers ---------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table; the first ``left`` columns are left-aligned (names), the others right (numbers)."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- what the report compares --------------------------------------------------------------------


# -- the report ------------------------------------------------------------------------------------


def build_report(directory: str, baseline: str | None = None, plots: bool = True,
                 printer: Callable[[str], None] | None = None) -> tuple[str, list[str]]:
    """The Markdown text of the report of ``directory`` and the plot files written (relative paths)."""
    ctx = _context(directory, baseline)
    runs, base = ctx.runs, ctx.base
    failures = load_failures(directory)
    seeds_all = sorted({s for seeds in runs.values() for s in seeds})
    out = [f"# Grid report: `{os.path.basename(os.path.abspath(directory))}`", ""]
    out.append(f"{len(runs)} run(s) × seeds {_seed_text(seeds_all)} = "
               f"{sum(len(s) for s in runs.values())} trained run(s)"
               + (f", {len(failures)} failed (see the end)" if failures else "")
               + f"; baseline **{base}**. Regenerate with `python -m leverjax.report "
               f"{os.path.basename(os.path.abspath(directory))}`.")
    out.append("")
    splits = final_splits(directory)
    if splits - {"test"}:
        out += [f"**Final metrics are not all on a test split**: the data of some groups has no test queries, and "
                f"their final evaluation (the `test_*` metrics below) uses: {', '.join(sorted(map(str, splits)))}.",
                ""]
    if not runs:
        out.append("No finished run yet.")
        return "\n".join(out) + "\n", []
    out += summary(ctx, failures)
    out += _legend(ctx)
    out += ["Every ± is a 95% confidence interval over seeds (Student's t); proportions (accuracies, shares) use "
            "the t interval clipped to their range, written `m [low, high]` when the clip binds. A Δ is paired: "
            f"per seed, the run minus the baseline **{base}** on the same seed, then the mean ± 95% CI of those "
            "differences; `*` marks a Δ whose interval excludes 0 (only with 3 or more seeds). Numbers are "
            "rounded to two significant digits of their interval. Test split unless a section says otherwise.", ""]
    if ctx.other_reward:
        out += [f"† marks runs whose reward (mode or weights) differs from **{base}**'s: their expected and "
                "top-1 rewards are on another scale and their Δ in reward is not a comparison of policies "
                "(accuracies are comparable).", ""]
    written: list[tuple[str, str]] = []
    message = ""
    if plots:
        written, message = write_plots(ctx)
    forest = [w for w in written if w[1].endswith("forest.png")]
    out += _headline(ctx)
    out += _realised_and_power(ctx)
    for title, path in forest:
        out += [f"![{title}]({path})", "", _forest_caption(ctx), ""]
    out += _final_tables(ctx)
    out += _data_sets(directory)
    out += _scorer_calls(ctx)
    out += [f"![{title}]({path})" for title, path in written if path.endswith("scorer_calls.png")]
    out += _equal_epochs(ctx)
    if plots:
        out += ["## Training curves", ""]
        if message:
            out += [message, ""]
        for title, path in written:
            if path.endswith(("forest.png", "scorer_calls.png")):
                continue
            out += [f"### {title}", "", f"![{title}]({path})", ""]
    out += definitions(ctx)
    prov = (ctx.grid or {}).get("provenance")
    out += ["## Provenance", ""]
    if prov:
        from leverjax.run.provenance import markdown

        out += markdown(prov) + ["", "The same record is in `grid.json` (`provenance`); each group's "
                                 "`runs/<group>/results.json` holds the provenance of the launch that trained it.", ""]
    else:
        out += ["No provenance recorded (`grid.json` has none: a results directory from an older version).", ""]
    if failures:
        out += ["## Failed runs", ""]
        rows = [[s.get("variant", s.get("run")), s.get("seed", ""), s.get("kind", ""),
                 (s.get("reason") or "").replace("|", "/").replace("\n", " ")[:300]] for s in failures]
        out += [_md_table(["run", "seed", "kind", "reason"], rows, left=4), ""]
    return "\n".join(out) + "\n", [p for _, p in written]


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _name(variant: str, other: set, dagger: bool = True) -> str:
    return f"{variant} †" if dagger and variant in other else variant


# -- the summary ------------------------------------------------------------------------------------


def summary(ctx: Context, failures: Sequence[dict] = ()) -> list[str]:
    """The summary's Markdown lines: every claim is computed from the numbers here."""
    key, label, scale, bounds, get, unit = ctx.headline()
    others = [v for v in ctx.runs if v != ctx.base]
    counts = {v: ctx.seeds(v) for v in ctx.runs if ctx.seeds(v)}  # runs with a finished seed
    n_min = min(counts.values()) if counts else 0
    n_max = max(counts.values()) if counts else 0
    seed_text = f"{n_min}" if n_min == n_max else f"{n_min}–{n_max}"
    out = ["## Summary", ""]
    out.append(f"- **Seeds:** {seed_text} per run; each run is compared with the baseline **{ctx.base}** on "
               f"{label}, paired by seed.")
    if n_min < stats.MIN_SEEDS_FOR_CLAIMS:
        why = ("there is no confidence interval" if n_min < 2 else
               f"the 95% intervals are too wide (t = {stats.t_critical(n_min - 1):.1f}) to tell the runs apart")
        out.append(f"- **Too few seeds to conclude:** with {n_min} seed{'s' if n_min != 1 else ''} per run {why}; "
                   "no Δ is starred and the differences below are point estimates, not findings. Train with "
                   "`--seeds=5` or more.")
    digits = 2 if ctx.oracle else 3
    deltas = {v: ctx.delta(v, get, scale, bounds) for v in others}
    conclusive = n_min >= stats.MIN_SEEDS_FOR_CLAIMS
    rank = {1: 0, -1: 1, 0: 2}  # findings first (higher, then lower), then the rest; by Δ within each
    order = sorted(others, key=lambda v: (rank[deltas[v].direction] if conclusive else 0,
                                          -(deltas[v].mean if math.isfinite(deltas[v].mean) else -1e9)))
    for v in order:
        d = deltas[v]
        name = f"**{v}**"
        if d.n == 0:
            why = ("no finished seed (see the failed runs)" if not ctx.seeds(v) else
                   f"the baseline **{ctx.base}** has no finished seed" if not ctx.base_runs else
                   "no seed in common with the baseline")
            out.append(f"- {name}: {why}; nothing to compare.")
            continue
        value = f"{_unsigned_zero(d.mean, d.decimals(digits)):+.{d.decimals(digits)}f}{unit}"
        if not d.conclusive:
            out.append(f"- {name}: {value} vs **{ctx.base}** ({d.interval_text(digits, unit)}, {d.n} seed"
                       f"{'s' if d.n != 1 else ''}; too few seeds to conclude).")
        elif d.direction > 0:
            out.append(f"- {name} is **higher** than **{ctx.base}** beyond its CI: {value} "
                       f"({d.interval_text(digits, unit)}, {d.n} seeds).")
        elif d.direction < 0:
            out.append(f"- {name} is **lower** than **{ctx.base}** beyond its CI: {value} "
                       f"({d.interval_text(digits, unit)}, {d.n} seeds).")
        else:
            out.append(f"- {name}: no difference from **{ctx.base}** beyond the CI: {value} "
                       f"({d.interval_text(digits, unit)}, {d.n} seeds).")
    if ctx.oracle:
        out += _disagreements(ctx, deltas)
        out += _reference_sentence(ctx, get)
    else:
        out += _offline_reference_sentence(ctx)
    if failures:
        out.append(f"- **{len(failures)} run(s) failed** (listed at the end).")
    out.append("")
    return out


def _last_epoch_delta(ctx: Context, variant: str, metric: str, scale: float = 1.0) -> tuple[int, Estimate]:
    """The paired Δ of a val metric after the run's last GRPO epoch (the baseline held at its last epoch)."""
    curves = {s: r.grpo_curve(metric) for s, r in ctx.runs[variant].items()}
    last = max((max(c) for c in curves.values() if c), default=0)
    base = {s: r.grpo_curve(metric) for s, r in ctx.runs[ctx.base].items()}
    diffs = paired_at(curves, base, last, scale)
    mean, half = stats.mean_ci(diffs)
    return last, Estimate(mean, half, len(diffs))


def _signals(ctx: Context, variant: str, acc: Estimate) -> tuple[list, list]:
    """(offline, accuracy) signals of a run: (where, Δ, unit, digits) on test, then on val after its last GRPO
    epoch (when it has GRPO epochs)."""
    offline = [("test expected reward", ctx.delta(variant, lambda r: r.final.get("test_expected_reward")), "", 3)]
    accuracy = [("test oracle accuracy", acc, " pts", 2)]
    last, er_val = _last_epoch_delta(ctx, variant, "val_expected_reward")
    if last > 0:
        offline.append((f"val expected reward after {last} GRPO epochs", er_val, "", 3))
        _, acc_val = _last_epoch_delta(ctx, variant, ORACLE_MEAN, 100.0)
        accuracy.append((f"val oracle accuracy after {last} GRPO epochs", acc_val, " pts", 2))
    return [x for x in offline if x[1].n], [x for x in accuracy if x[1].n]


def _disagreements(ctx: Context, acc_deltas: dict[str, Estimate]) -> list[str]:
    """Where the offline expected reward and the oracle accuracy point in different directions, on test or on
    val after the last GRPO epoch."""
    def text(sig) -> str:
        where, d, unit, digits = sig
        return f"{where} {_unsigned_zero(d.mean, d.decimals(digits)):+.{d.decimals(digits)}f}{unit} " \
               f"({d.interval_text(digits, unit)})"

    lines = []
    for v, acc in acc_deltas.items():
        if v in ctx.other_reward or not acc.n:
            continue
        offline, accuracy = _signals(ctx, v, acc)
        moved = [o for o in offline if o[1].direction]
        against = [(o, a) for o in moved for a in accuracy if a[1].direction and a[1].direction != o[1].direction]
        if against:
            o, a = against[0]
            lines.append(f"- **Offline metric and accuracy disagree** for **{v}**: {text(o)}, but {text(a)}. The "
                         "expected reward is measured on the labelled trajectories, not on what the policy picks.")
        elif moved and not any(a[1].direction for a in accuracy):
            lines.append(f"- **{v}**: the {text(moved[0])} moves beyond its CI while the {text(accuracy[0])} "
                         "shows no change beyond its CI: the offline gain is not confirmed by accuracy.")
        elif not acc.conclusive:
            loose = [(o, a) for o in offline for a in accuracy if o[1].has_ci and a[1].has_ci
                     and o[1].mean * a[1].mean < 0 and (o[1].lo > 0 or o[1].hi < 0 or a[1].lo > 0 or a[1].hi < 0)]
            if loose:  # opposite ways, one interval off 0, too few seeds to call it
                lines.append(f"- **{v}**: point estimates point different ways ({text(loose[0][0])}; "
                             f"{text(loose[0][1])}); too few seeds to conclude.")
    return lines


def _reference_sentence(ctx: Context, get: Callable[[Run], float | None]) -> list[str]:
    refs = ctx.references
    shots = ctx.shots
    if not refs or not shots:
        return ["- **References:** none recorded (`baselines.json` is missing: re-run the launcher to compute "
                "random, similarity and oracle selections)."] if ctx.oracle else []
    span = f"{shots[0]}–{shots[-1]}"
    parts = []
    for name in ("random_all", "random", "similarity", "oracle_greedy"):
        m = _ref_mean(refs, "test", name, shots)
        if m is not None:
            parts.append(f"{REFERENCE_NAMES[name]} {100 * m:.1f}%")
    steps = refs.get("num_steps")
    best = _ref_acc(refs, "test", "best_labelled", steps) if steps else None
    text = (f"- **References** (same test queries, mean over shots {span}): " + ", ".join(parts)
            + (f"; the best labelled trajectory reaches {100 * best:.1f}% at {steps} shots" if best is not None else "")
            + ".")
    means = {v: estimate([get(r) for r in ctx.finished(v).values()], 100.0) for v in ctx.runs}
    means = {v: e for v, e in means.items() if e.n}
    lo = _ref_mean(refs, "test", "random", shots)
    hi = _ref_mean(refs, "test", "oracle_greedy", shots)
    sim = _ref_mean(refs, "test", "similarity", shots)
    if means and lo is not None and hi is not None and hi > lo:
        best_v = max(means, key=lambda v: means[v].mean)
        pieces = []
        for v in dict.fromkeys([ctx.base, best_v]):
            e = means[v] if v in means else None
            if e is None:
                continue
            gap = (e.mean / 100 - lo) / (hi - lo)
            rel = ("above" if e.mean / 100 > sim else "below") if sim is not None else ""
            role = "the baseline" if v == ctx.base else "the highest mean"
            pieces.append(f"{role} **{v}** {e.text(2)}% ({100 * gap:.0f}% of the way from random to the ceiling"
                          + (f", {rel} similarity retrieval" if rel else "") + ")")
        text += " Policies: " + "; ".join(pieces) + "."
    return [text]


def _offline_reference_sentence(ctx: Context) -> list[str]:
    offline = _offline_refs(ctx)
    rand, sim = offline.get("random", {}), offline.get("similarity", {})
    if not rand and not sim:
        return []
    parts = []
    if rand.get("expected_reward") is not None:
        parts.append(f"a uniform random policy over the labelled trajectories has expected reward "
                     f"{rand['expected_reward']:.3f}")
    if sim.get("top1_reward") is not None:
        parts.append(f"ranking them by similarity to the query gives a top-1 reward of {sim['top1_reward']:.3f}")
    base = estimate([r.final.get("test_expected_reward") for r in ctx.base_runs.values()])
    text = "- **References** (test): " + "; ".join(parts)
    if base.n:
        text += f"; the baseline **{ctx.base}** reaches {base.text(3)}"
    return [text + ". No ground truth here: these metrics score the labelled trajectories only."]


# -- the legend -------------------------------------------------------------------------------------

def _data_sets(directory: str) -> list[str]:
    """The data each run trained on, when a grid trains on more than one data set or transforms one: per data
    set its file, transform and subsample, and the training queries it left (``baselines.json``'s diagnosis)."""
    from leverjax.fileio import read_json

    sets = (read_json(os.path.join(directory, "baselines.json")) or {}).get("sets") or []
    if len(sets) < 2 and not any(s.get("data_transform", "none") != "none" or s.get("data_queries") for s in sets):
        return []
    rows = []
    for s in sets:
        d = s.get("diagnosis") or {}
        share = d.get("positive_share")
        rows.append([", ".join(f"`{v}`" for v in s.get("variants", [])),
                     f"`{os.path.basename(s['data'])}`" if s.get("data") else "built-in synthetic set",
                     s.get("data_transform", "none"), str(s.get("data_queries") or "all"),
                     str(d.get("queries", "n/a")), str(d.get("trajectories", "n/a")),
                     "n/a" if share is None else f"{share:.3f}",
                     "n/a" if d.get("zero_positive_share") is None else f"{d['zero_positive_share']:.3f}",
                     "n/a" if d.get("flat_acc_share") is None else f"{d['flat_acc_share']:.3f}"])
    return ["## Data", "", "The training queries each run trained on after its data transform and subsample "
            "(`python -m leverjax.data.diagnose` gives the rest; validation and test queries are never transformed).",
            "", _md_table(["runs", "data", "transform", "queries kept", "train queries", "trajectories",
                           "positive share", "no positive", "flat acc"], rows, left=4), ""]


def _scorer_calls(ctx: Context) -> list[str]:
    """What each run cost in scorer calls (on real data each is one VLM generation) against what it reached."""
    rows = scorer_call_rows(ctx)
    if not rows:
        return []
    label = ctx.headline()[1]
    table = [[f"**{v}**" if v == ctx.base else v, f"{labels:,}", f"{calls:,.0f}", f"{labels + calls:,.0f}", e.text(2)]
             for v, labels, calls, e in rows]
    return ["## Scorer calls", "",
            "Every labelled training trajectory was one scorer call before training (on real data one VLM "
            "generation); on-policy GRPO spends more while it trains (`train_scorer_calls`; a reward-model scorer "
            f"spends none). Per seed; the last column is the {label}, %, mean ± 95% CI over seeds.", "",
            _md_table(["run", "labels (before training)", "calls while training", "total", "accuracy"], table), ""]


def _num(v: Any) -> str:
    if isinstance(v, float):
        text = f"{v:g}"
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant}e{int(exp)}"
        return text
    return str(v)


def describe_changes(config: dict, base: dict) -> list[str]:
    """What ``config`` changes relative to ``base``, in the words each config field declares (its ``label`` and
    ``words``: ``grpo_lr`` → "GRPO lr 5e-5"); run-only fields and fields labelled ``""`` are left out."""
    out = []
    for k, v in config.items():
        meta = config_lib.FIELDS[k].metadata if k in config_lib.FIELDS else {}
        if base.get(k) == v or meta.get("kind") == "run" or meta.get("label") == "":
            continue
        words, label = meta.get("words") or {}, meta.get("label")
        if v in words:
            out.append(words[v])
        elif label:
            out.append(label.format(_num(v) if v != "" else "built-in synthetic"))
        else:
            out.append(f"{k} = {_num(v)}")
    return out


def _legend(ctx: Context) -> list[str]:
    configs = variant_configs(ctx.grid)
    descriptions = (ctx.grid or {}).get("descriptions") or {}
    base_cfg = configs.get(ctx.base)
    rows = []
    experiment_of = {r["variant"]: r.get("experiment") for r in (ctx.grid or {}).get("runs", []) if "variant" in r}
    for v, seeds in ctx.runs.items():
        exp = experiment_of.get(v) or next(iter(seeds.values())).experiment
        if v == ctx.base:
            change = "the baseline"
        elif base_cfg is None or v not in configs:
            change = "(no config recorded)"
        else:
            change = ", ".join(describe_changes(configs[v], base_cfg)) or "the baseline's config (another seed set)"
        rows.append([f"**{v}**" if v == ctx.base else _name(v, ctx.other_reward), str(len(seeds)),
                     descriptions.get(exp, "").replace("|", "/"), change.replace("|", "/")])
    return ["## Runs", "", _md_table(["run", "seeds", "what it is", f"differs from **{ctx.base}** in"], rows, left=4),
            ""]


# -- tables -----------------------------------------------------------------------------------------


def _reference_rows_acc(ctx: Context, n_cols: int) -> list[list[str]]:
    """Reference rows of the researchers' table (synthetic data): accuracy at each shot, the Δ cells empty."""
    refs = ctx.references
    if not refs or "test" not in (refs.get("splits") or {}) or "oracle" not in refs["splits"]["test"]:
        return []
    rows = []
    oracle = refs["splits"]["test"]["oracle"]
    for name in ("random_all", "random", "similarity", "best_labelled", "oracle_greedy"):
        if name not in oracle:  # results written before the reference existed
            continue
        entry = oracle[name] or {}
        cells = []
        for n in ctx.shots:
            v = (entry.get("acc") or {}).get(str(n))
            if v is None:
                cells.append("n/a")
                continue
            se = (entry.get("stderr") or {}).get(str(n))
            cells.append(f"{100 * v:.2f}" + (f" (MC ± {100 * 1.96 * se:.2f})" if se else ""))
        rows.append([f"*{REFERENCE_NAMES[name]}*", "ref"] + cells + [""] * (n_cols - len(cells) - 2))
    return rows


def _headline(ctx: Context) -> list[str]:
    runs, base = ctx.runs, ctx.base
    if ctx.oracle:
        metrics = [(f"test_oracle_acc_{n}", f"acc@{n}") for n in ctx.shots]
        scale, digits, bounds = 100.0, 2, (0.0, 100.0)
        title = (f"## The researchers' table: oracle accuracy (%) of the greedy {ctx.shots[0]}–{ctx.shots[-1]}-shot "
                 "selections (test split, final parameters)")
        note = (f"Exact expected VQA accuracy under the synthetic ground truth, in %. Δ columns: the run minus "
                f"**{base}** on the same seed, in percentage points (pts), mean ± 95% CI over seeds; Δ mean: the "
                "same for the mean over shots. Reference rows (*italic*) are fixed selections scored on the same "
                "queries (no seeds): see the metric definitions.")
        delta_unit = " (pts)"
    else:
        metrics = [("test_expected_reward", "E[r]"), ("test_top1_reward", "top-1 reward")]
        scale, digits, bounds = 1.0, 3, None
        title = "## The researchers' table: expected reward (test split, final parameters)"
        note = ("Real data: expected reward of the policy over the labelled trajectories, and the reward of "
                f"the trajectory it ranks first. Δ columns: the run minus **{base}** on the same seed, mean ± 95% "
                "CI over seeds. These metrics score the labelled trajectories only: they do not measure the "
                "demonstrations the policy would pick from the whole pool.")
        delta_unit = ""
    header = (["run", "n"] + [label for _, label in metrics]
              + [f"Δ {label} vs {base}{delta_unit}" for _, label in metrics] + [f"Δ mean vs {base}{delta_unit}"])
    rows = []
    for variant in runs:
        finished = ctx.finished(variant)
        row = [f"**{variant}**" if variant == base else _name(variant, ctx.other_reward, not ctx.oracle),
               str(len(finished))]
        for m, _ in metrics:
            row.append(estimate([r.final.get(m) for r in finished.values()], scale, bounds).text(digits))
        if variant == base:
            row += ["—"] * (len(metrics) + 1)
        else:
            for m, _ in metrics:
                row.append(ctx.delta(variant, lambda r, m=m: r.final.get(m), scale, bounds).text(
                    digits, signed=True, star=True))
            avg = lambda r: _mean([r.final.get(m) for m, _ in metrics])  # noqa: E731
            row.append(ctx.delta(variant, avg, scale, bounds).text(digits, signed=True, star=True))
        rows.append(row)
    if ctx.oracle:
        rows += _reference_rows_acc(ctx, len(header))
    else:
        rows += _reference_rows_offline(ctx, [m for m, _ in metrics], len(header))
    return [title, "", note, "", _md_table(header, rows), ""]


def _realised_and_power(ctx: Context) -> list[str]:
    """Expected vs realised accuracy (mean over shots) per run, and for each comparison the smallest effect
    the grid could have detected on the realised scores (:mod:`leverjax.report.power`)."""
    if not ctx.oracle:
        return []
    realised = [f"test_realised_acc_{n}" for n in ctx.shots]
    expected = [f"test_oracle_acc_{n}" for n in ctx.shots]
    if not any(r.final.get(realised[0]) is not None for v in ctx.runs for r in ctx.finished(v).values()):
        return []
    rows_power = {r["variant"]: r for r in power.comparisons(ctx.directory, ctx.base)}
    factor = power.z_factor()
    header = ["run", "n", "expected (%)", "realised (%)", f"Δ realised vs {ctx.base} (pts)",
              "smallest detectable Δ (pts)", "seeds × questions"]
    mean_of = lambda names: (lambda r: _mean([r.final.get(m) for m in names]))  # noqa: E731
    rows = []
    for variant in ctx.runs:
        finished = ctx.finished(variant)
        row = [f"**{variant}**" if variant == ctx.base else variant, str(len(finished)),
               estimate([mean_of(expected)(r) for r in finished.values()], 100.0, (0.0, 100.0)).text(2),
               estimate([mean_of(realised)(r) for r in finished.values()], 100.0, (0.0, 100.0)).text(2)]
        if variant == ctx.base:
            row += ["—", "—", "—"]
        else:
            p = rows_power.get(variant)
            row.append(ctx.delta(variant, mean_of(realised), 100.0, (0.0, 100.0)).text(2, signed=True, star=True))
            row.append(f"{p['mde']:.2f}" if p and p["mde"] is not None else "n/a")
            row.append(f"{p['seeds']} × {p['questions']}" if p else "n/a")
        rows.append(row)
    return ["## Realised accuracy: what a VLM evaluation would see", "",
            "*Expected* is the oracle's exact accuracy (the truth); *realised* scores the simulated VLM's one answer "
            "per test question (`test_questions` sets how many count), as a researcher scoring with the model "
            f"would see it; both are means over shots {ctx.shots[0]}–{ctx.shots[-1]}. *Smallest detectable Δ*: the "
            f"effect a paired two-sided test (α = {power.ALPHA}) would detect with {power.POWER:.0%} power at this "
            f"grid's seeds × questions, {factor:.2f} standard errors of the mean per-question difference, with the "
            "variance split into seed, question and residual parts estimated from the grid itself "
            "(`python -m leverjax.report.power DIR --delta=x` tells how many seeds × questions an effect x needs). "
            "A Δ smaller than it is not resolved by a study of this size.", "",
            _md_table(header, rows), ""]


def _offline_refs(ctx: Context, split: str = "test") -> dict:
    refs = ctx.references or {}
    return ((refs.get("splits") or {}).get(split) or {}).get("offline") or {}


def _reference_rows_offline(ctx: Context, metrics: Sequence[str], n_cols: int, prefix: str = "test_",
                            digits: int = 3) -> list[list[str]]:
    """Reference rows for offline metrics (``prefix + name``): a value where the metric applies, else n/a."""
    offline = _offline_refs(ctx)
    rows = []
    for name in ("random", "similarity"):
        if name not in offline:
            continue
        cells = []
        for m in metrics:
            v = offline[name].get(m[len(prefix):] if m.startswith(prefix) else m)
            cells.append(f"{v:.{digits}f}" if isinstance(v, (int, float)) else "n/a")
        rows.append([f"*{REFERENCE_NAMES[name]}*", "ref"] + cells + [""] * (n_cols - 2 - len(cells)))
    return rows


def _final_tables(ctx: Context) -> list[str]:
    out = []
    present = {m for s in ctx.runs.values() for r in s.values() for m in r.final}
    for prefix, title in (("test_", "final parameters"),
                          ("best_test_", "best-epoch parameters (by the config's best_metric on val)")):
        metrics = [t for t in _TABLE_METRICS if prefix + t[0] in present]
        if not metrics:
            continue
        rows = []
        for variant in ctx.runs:
            finished = list(ctx.finished(variant).values())
            row = [_name(variant, ctx.other_reward), str(len(finished))]
            for m, _, scale, bounds, digits in metrics:
                row.append(estimate([r.final.get(prefix + m) for r in finished], scale, bounds).text(digits))
            rows.append(row)
        if prefix == "test_":
            offline = _offline_refs(ctx)
            oracle = ((ctx.references or {}).get("splits") or {}).get("test", {}).get("oracle") or {}
            for name in ("random", "similarity"):
                if name not in offline:
                    continue
                row = [f"*{REFERENCE_NAMES[name]}*", "ref"]
                for m, _, scale, _, digits in metrics:
                    if m.startswith("oracle_acc_"):
                        v = (oracle.get(name, {}).get("acc") or {}).get(m.rsplit("_", 1)[1])
                    else:
                        v = offline[name].get(m)
                    row.append(f"{v * scale:.{digits}f}" if v is not None else "n/a")
                rows.append(row)
        out += [f"## Test metrics, {title}", "", _md_table(["run", "n"] + [label for _, label, *_ in metrics], rows), ""]
    return out


def _equal_epochs(ctx: Context) -> list[str]:
    runs, base = ctx.runs, ctx.base
    metrics = [("val_expected_reward", "val expected reward", 1.0, None, 3)]
    shots = oracle_shots({m for seeds in runs.values() for r in seeds.values() for pe in r.epochs.values() for m in pe})
    if ctx.oracle and shots:
        metrics.append((ORACLE_MEAN, f"val oracle accuracy (%), mean over shots 1–{shots[-1]}", 100.0,
                        (0.0, 100.0), 2))
    out = ["## Comparison at equal epochs (validation split)", "",
           "Each run's validation metric after the same number of GRPO epochs (0 = the last epoch before "
           "GRPO; `grpo_positive` epochs count first). The Δ table compares with the baseline at the same "
           "epoch, paired by seed; a baseline with fewer GRPO epochs is held at its last one.", ""]

    for metric, label, scale, bounds, digits in metrics:
        curves = {v: {s: r.grpo_curve(metric) for s, r in seeds.items()} for v, seeds in runs.items()}
        last = {v: max((max(c) for c in cs.values() if c), default=0) for v, cs in curves.items()}
        cols = equal_epoch_columns(list(last.values()))
        rows, deltas = [], []
        base_curves = curves.get(base, {})
        for variant, cs in curves.items():
            name = _name(variant, ctx.other_reward, metric != ORACLE_MEAN)
            row, drow = [name], [name]
            for e in cols:
                vals = [c.get(e) for c in cs.values() if e in c]
                row.append(estimate(vals, scale, bounds).text(digits) if vals else "")
                if variant == base or e > last[variant]:
                    drow.append("—" if variant == base else "")
                    continue
                diffs = paired_at(cs, base_curves, e, scale)
                mean, half = stats.mean_ci(diffs)
                est = Estimate(mean, half, len(diffs), (-bounds[1], bounds[1]) if bounds else None)
                drow.append(est.text(digits, signed=True, star=True) if diffs else "")
            rows.append(row)
            deltas.append(drow)
        header = ["run"] + [("before GRPO" if e == 0 else f"GRPO {e}") for e in cols]
        unit = " (pts)" if scale == 100.0 else ""
        out += [f"### {label}", "", _md_table(header, rows), "",
                f"Δ to **{base}**{unit}, paired by seed:", "", _md_table(header, deltas), ""]
        if metric == ORACLE_MEAN and ctx.references:
            parts = []
            for name in ("random", "similarity", "oracle_greedy"):
                m = _ref_mean(ctx.references, "val", name, shots)
                if m is not None:
                    parts.append(f"{REFERENCE_NAMES[name]} {100 * m:.2f}%")
            if parts:
                out += [f"References on the same val queries (mean over shots 1–{shots[-1]}): " + ", ".join(parts)
                        + ".", ""]
    return out


# -- metric definitions ---------------------------------------------------------------------------


def definitions(ctx: Context) -> list[str]:
    lines = ["## What the metrics measure", ""]
    if ctx.oracle:
        lines += [
            "- **oracle accuracy (acc@n)**: the exact expected VQA accuracy, under the synthetic data's hidden "
            "ground truth, of prompting with the policy's greedy n-shot selection from the query's whole pool "
            "(its first n picks, in pick order). The one metric that scores what the policy would actually pick.",
        ]
    lines += [
        "- **expected reward (E[r])**: Σ π(m)·r_m over the query's *labelled* trajectories, with the policy "
        "renormalised over them. It measures how the policy ranks the labelled set, not the demonstrations it "
        "would pick from the pool (those are almost never labelled: see *labelled*).",
        "- **top-1 reward**: the reward of the labelled trajectory the policy ranks first; the same caveat.",
        "- **labelled**: share of queries whose greedy S-step selection is one of the labelled trajectories; "
        "**labelled r**: the mean reward of those selections. When *labelled* is small, E[r] and top-1 reward "
        "say little about the policy's actual picks.",
        "- **changed**: share of queries whose greedy selection differs from the reference policy's (how far "
        "GRPO moved the picks).",
        "- **redund.**: mean pairwise cosine of the embeddings of the greedy picks (higher: more similar "
        "demonstrations).",
        "- **loss**: the validation loss (RCE on raw rewards at τ = 1) — comparable across phases.",
        "- **KL, β, advantage std, zero-variance share** (curves): the GRPO training signals — the KL estimate "
        "to the reference policy, the (adaptive) KL weight, the std of the advantages, and the share of "
        "query groups whose rewards are all equal (they carry no gradient).",
        "- Reference selections (fixed, no training, no seeds), scored on the same queries:",
        "  - *random selection*: n distinct pool candidates drawn uniformly; its expectation, exact for n ≤ 2, "
        "else from seeded Monte Carlo draws (the researchers' table shows ±1.96 standard errors). Its E[r] and "
        "top-1 reward are those of a uniform policy (the mean labelled reward).",
        "  - *similarity retrieval*: the n pool candidates nearest to the query by embedding cosine, most "
        "similar first. E[r] does not apply (it is no distribution over the labelled trajectories); its top-1 "
        "reward is that of the labelled trajectory whose demonstrations are on average most similar.",
    ]
    if ctx.oracle:
        lines += [
            "  - *best labelled trajectory*: the query's labelled trajectory with the highest oracle accuracy "
            "(its first n steps); labelled trajectories have S steps, so there is no value (n/a) for n > S.",
            "  - *oracle greedy (ceiling)*: demonstrations appended one at a time, each the pool candidate that "
            "maximises the oracle accuracy so far (exact best for n = 1, greedy beyond).",
        ]
    lines.append("")
    return lines




def _forest_caption(ctx: Context) -> str:
    panels = _forest_panels(ctx)
    n_min = min((ctx.seeds(v) for v in ctx.runs if ctx.seeds(v)), default=0)
    text = (f"Forest plot: each row is a run, the dot its mean Δ to **{ctx.base}** over seeds (paired) and the bar "
            f"its 95% CI; green/red: the interval lies above/below 0, grey: it contains 0"
            + (" or there are fewer than 3 seeds" if n_min < stats.MIN_SEEDS_FOR_CLAIMS else "") + ".")
    if len(panels) > 1:
        text += (" Left: " + panels[0][0] + "; right: " + panels[1][0]
                 + " — where they point different ways, the offline metric and accuracy disagree.")
    return text


def write_report(directory: str, baseline: str | None = None, plots: bool = True,
                 printer: Callable[[str], None] | None = None) -> str:
    """Writes ``directory/report.md`` (and ``plots/``) atomically; returns its path."""
    text, _ = build_report(directory, baseline=baseline, plots=plots, printer=printer)
    path = os.path.join(directory, "report.md")
    write_text_atomic(path, text)
    return path


def cli() -> None:
    """``python -m leverjax.report``: the report of a results directory, or (--metric_validity) the offline
    metrics' validity on a synthetic grid."""
    from absl import flags

    from leverjax import command as command_lib

    flags.DEFINE_string("baseline", None, "Run (or experiment) the Δ columns compare with (default: rce_only if "
                        "present, else the first run).")
    flags.DEFINE_bool("plots", True, "Draw plots/ (--noplots: tables only).")
    flags.DEFINE_string("metric_validity", None, "Print how well each offline metric tracks the oracle accuracy in "
                        "this results directory (Spearman ρ per epoch and per run with bootstrap CIs, accuracy lost "
                        "by best-epoch selection) and write metric_validity.md and .json there.")
    FLAGS = flags.FLAGS

    def main(argv: Sequence[str]) -> None:
        if FLAGS.metric_validity is not None:
            if len(argv) > 1:
                raise ConfigError("give either a results directory or --metric_validity=DIR, not both")
            directory = FLAGS.metric_validity
            text, result = metric_validity_files(directory)
            print(text, end="")
            return
        if len(argv) < 2:
            raise ConfigError("give a results directory (python -m leverjax.report DIR), or --metric_validity=DIR")
        directory = argv[1]
        if not os.path.exists(os.path.join(directory, "metrics.csv")):
            raise ConfigError(f"{os.path.join(directory, 'metrics.csv')} does not exist (is {directory} a launcher "
                              f"results directory?)")
        try:
            path = write_report(directory, baseline=FLAGS.baseline, plots=FLAGS.plots)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        print(f"wrote {path}")

    command_lib.run(main, command="python -m leverjax.report", positional=("directory",),
                    about="Writes DIR/report.md and DIR/plots/ from a grid's results directory, or "
                          "(--metric_validity=DIR) checks the offline metrics against the oracle accuracy.")


def metric_validity_files(directory: str) -> tuple[str, dict]:
    """The metric-validity table of ``directory`` (text and record), also written there as
    ``metric_validity.md`` and ``.json``."""
    try:
        result = validity.metric_validity(grid_runs(directory), source=directory)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    text = validity.format_validity(result)
    write_text_atomic(os.path.join(directory, "metric_validity.md"), text)
    write_json_atomic(os.path.join(directory, "metric_validity.json"), result)
    return text, result


if __name__ == "__main__":
    cli()
