"""The data loop's three measurements on the default simulator (docs/results/data-loop.md).

    python bench/bench_data_loop.py [--seeds=3] [--out=results/data_loop]

1. a second round against the first (``run.py --experiment=rounds``: rce_only, then rce_only again from scratch on
   its data merged with candidates its own selector generated, labelled by the simulator's one-answer score);
2. balanced against unbalanced training queries at equal size: ``data_transform=balanced`` (the queries with a
   positive share in [0.40, 0.60]; n of them) against ``none`` subsampled to the same n queries;
3. volume against balance: ``none`` with 1.5 n queries against ``balanced`` with n: the two effects the real
   report (Balanced V2 → V3) could not separate.

Every figure is the test oracle accuracy of the final parameters, mean over shots 1–4, in points; Δ are paired by
seed with the 95% t interval. The subsample of ``none`` is one seeded draw (``data_queries_seed=0``), the same for
every training seed: the intervals are over training seeds, not over draws of the queries. It trains through
the launcher, resumes, and prints the table it measured.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leverjax.core.stats import format_ci, mean_ci  # noqa: E402
from leverjax.data.curate import curate  # noqa: E402
from leverjax.data.synth import load_or_make_default  # noqa: E402
from leverjax.report.rounds import accuracy  # noqa: E402
from leverjax.run import launch, rounds  # noqa: E402
from leverjax.run.results import finished_results  # noqa: E402


def finals(result) -> dict[str, dict[int, float]]:
    """variant -> seed -> accuracy (points) of a grid's finished runs."""
    out: dict[str, dict[int, float]] = {}
    for run, st, rec in finished_results(result.directory, result.grid, result.statuses):
        if st.get("state") == "done":
            out.setdefault(run.variant, {})[run.seed] = 100 * accuracy(rec["final"])[0]
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> str:
    diffs = [a[s] - b[s] for s in sorted(a) if s in b]
    m, h = mean_ci(diffs)
    return f"{format_ci(m, h, 2)} (n={len(diffs)})"


def level(a: dict[int, float]) -> str:
    m, h = mean_ci(list(a.values()))
    return format_ci(m, h, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default="results/data_loop")
    args = p.parse_args()
    t0 = time.perf_counter()
    quiet = lambda s: None  # noqa: E731
    ds = load_or_make_default()
    n = curate(ds, "balanced")[1]["train"]["queries"]
    big = int(round(1.5 * n))

    loop = rounds.run_rounds(["rounds"], seeds=args.seeds, out=os.path.join(args.out, "rounds"), printer=quiet)
    by_round: dict[int, dict[int, float]] = {}
    calls: dict[int, list[int]] = {}
    for rec in loop["runs"]:
        by_round.setdefault(rec["round"], {})[rec["seed"]] = 100 * accuracy(rec["final"])[0]
        calls.setdefault(rec["round"], []).append(rec["scorer_calls"])

    equal = launch.run_grid(["rce_only"], {"data_queries": n}, {"data_transform": ("balanced", "none")},
                            seeds=args.seeds, out=os.path.join(args.out, "equal_size"), printer=quiet, tables=False)
    volume = launch.run_grid(["rce_only"], {"data_queries": big}, seeds=args.seeds,
                             out=os.path.join(args.out, "volume"), printer=quiet, tables=False)
    eq, vol = finals(equal), finals(volume)
    bal = eq["rce_only[data_transform=balanced]"]
    unb = eq["rce_only[data_transform=none]"]
    more = vol["rce_only"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; commit {commit}; {time.perf_counter() - t0:.0f}s")
    print(f"balanced training queries n = {n} (of {len(ds.split_index('train'))}); 1.5 n = {big}")
    print("| measurement | accuracy (%) | paired Δ (points) |")
    print("|---|---|---|")
    print(f"| round 1 (rce_only, {len(by_round[1])} seeds) | {level(by_round[1])} | |")
    print(f"| round 2 against round 1 (scorer calls per seed: {sum(calls[2]) / len(calls[2]):.0f}) | "
          f"{level(by_round[2])} | {paired(by_round[2], by_round[1])} |")
    print(f"| unbalanced, n = {n} | {level(unb)} | |")
    print(f"| balanced against unbalanced, both n = {n} | {level(bal)} | {paired(bal, unb)} |")
    print(f"| unbalanced 1.5 n = {big} against balanced n = {n} | {level(more)} | {paired(more, bal)} |")
    print(json.dumps({"n": n, "rounds": by_round, "balanced": bal, "unbalanced": unb, "unbalanced_1_5n": more}))


if __name__ == "__main__":
    main()
