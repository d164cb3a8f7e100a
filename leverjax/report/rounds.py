"""``rounds.md``: the data loop's rounds compared, paired by seed (from ``rounds.json``, :mod:`leverjax.run.rounds`).

Per variant and round: the test oracle accuracy (the final parameters' exact accuracy, mean over shots 1–4;
realised accuracy when the data has no oracle), its change from round 1 paired by seed with a 95% t interval,
the round's training data (queries, trajectories, positive share of the training queries, from
:func:`leverjax.data.diagnose.diagnose`), and the scorer calls the round's generation cost (on real data each
is one VLM generation), per round and cumulated.
"""
from __future__ import annotations

import math
import os
from typing import Any

from leverjax.core.stats import format_ci, mean_ci
from leverjax.fileio import read_json, write_text_atomic

SHOTS = (1, 2, 3, 4)


def accuracy(final: dict) -> tuple[float | None, str]:
    """Mean over shots of the test oracle accuracy (else the realised one, else the val ones) and its name."""
    for prefix in ("test_oracle_acc", "test_realised_acc", "val_oracle_acc", "val_realised_acc"):
        vals = [final.get(f"{prefix}_{n}") for n in SHOTS]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if vals:
            return sum(vals) / len(vals), prefix.replace("_", " ")
    return None, "no accuracy"


def _data_stats(path: str, cache: dict) -> dict:
    if path not in cache:
        from leverjax.data.diagnose import diagnose
        from leverjax.data.npz import load_npz

        try:
            cache[path] = diagnose(load_npz(path), "train")
        except Exception as e:  # noqa: BLE001 -- a data file moved away since: the table says so
            cache[path] = {"error": str(e)}
    return cache[path]


def rows_by_variant(summary: dict) -> dict[str, dict[int, dict[int, dict]]]:
    out: dict[str, dict[int, dict[int, dict]]] = {}
    for rec in summary.get("runs", []):
        out.setdefault(rec["variant"], {}).setdefault(rec["round"], {})[rec["seed"]] = rec
    return out


def render(summary: dict, directory: str = "") -> str:
    by_variant = rows_by_variant(summary)
    cache: dict[str, Any] = {}
    lines = ["# Data-loop rounds", "",
             f"{summary.get('rounds', 1)} rounds of {', '.join(summary.get('experiments', []))}. Each round after the "
             "first trains from scratch on data the previous round's selector generated (its own seed's), labelled "
             "by a scorer; validation and test questions are the same in every round. Δ: paired by seed against "
             "round 1, with the 95% t interval. Scorer calls: distinct new prompts labelled (on real data, one VLM "
             "generation each).", ""]
    metric_name = None
    for variant, rounds in by_variant.items():
        base = {s: accuracy(r["final"])[0] for s, r in rounds.get(1, {}).items()}
        lines += [f"## `{variant}`", "",
                  "| round | seeds | accuracy (%) | Δ vs round 1 (points) | train queries | trajectories | positive "
                  "share | scorer calls (round / total) |", "|---|---|---|---|---|---|---|---|"]
        total_calls = 0.0
        for r in sorted(rounds):
            recs = rounds[r]
            accs = {s: accuracy(x["final"]) for s, x in recs.items()}
            metric_name = metric_name or next((name for _, name in accs.values() if name != "no accuracy"), None)
            values = [100 * a for a, _ in accs.values() if a is not None]
            m, h = mean_ci(values)
            diffs = [100 * (accs[s][0] - base[s]) for s in recs if s in base and accs[s][0] is not None
                     and base[s] is not None]
            dm, dh = mean_ci(diffs)
            delta = "—" if r == 1 else (format_ci(dm, dh, 2) if diffs else "n/a")
            if r > 1 and diffs and math.isfinite(dh):
                delta += " *" if abs(dm) > dh else ""
            stats = [_data_stats(x["data"], cache) for x in recs.values()]
            ok = [d for d in stats if "error" not in d]

            def avg(key, digits=0, ok=ok):
                vals = [d[key] for d in ok if d.get(key) is not None]
                return f"{sum(vals) / len(vals):.{digits}f}" if vals else "n/a"
            calls = [x.get("scorer_calls", 0) for x in recs.values()]
            mean_calls = sum(calls) / len(calls) if calls else 0.0
            total_calls += mean_calls
            lines.append(f"| {r} | {len(recs)} | {format_ci(m, h, 2)} | {delta} | {avg('queries')} | "
                         f"{avg('trajectories')} | {avg('positive_share', 3)} | {mean_calls:.0f} / {total_calls:.0f} |")
        lines.append("")
    if metric_name:
        lines += [f"Accuracy: {metric_name} (final parameters), mean over shots 1–4. * the interval excludes 0.", ""]
    if directory:
        lines += ["Each round's own grid and report: `round1/report.md`; later rounds under "
                  "`round<r>/<variant>/seed=<s>/`; their data under `round<r>/data/`.", ""]
    return "\n".join(lines)


def write_rounds_report(directory: str) -> str:
    """Writes ``DIR/rounds.md`` from ``DIR/rounds.json``; returns its path."""
    summary = read_json(os.path.join(directory, "rounds.json"))
    if not isinstance(summary, dict):
        from leverjax.errors import DataError

        raise DataError(f"{directory} holds no rounds.json (run the rounds first)")
    path = os.path.join(directory, "rounds.md")
    write_text_atomic(path, render(summary, directory))
    return path
