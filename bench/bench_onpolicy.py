"""On-policy GRPO on the default simulator: each experiment against rce_only, its scorer calls, and the reward
model's drift from the oracle (prints the tables of docs/results/onpolicy.md).

    python bench/bench_onpolicy.py [--seeds=5] [--out=DIR] [--reuse]

Trains (unless ``--reuse`` and DIR holds the grid) ``rce_only, scheme5_6, onpolicy, onpolicy_realised,
onpolicy_reward_model, onpolicy_dapo, onpolicy_estimators, onpolicy_budget`` with ``--seeds`` seeds in one grid
(``python run.py --experiment=... --seeds=N --out=DIR``), then reads DIR:

1. **Experiments.** Test oracle accuracy (mean over shots 1–4) per run, the paired Δ to ``rce_only`` with its
   95% t interval, and where the run stands between ``rce_only`` (0%) and the oracle-greedy ceiling (100%).
2. **Accuracy against scorer calls** per seed: the labelled training trajectories plus the calls made while
   training (the report's "Scorer calls" section and ``plots/scorer_calls.png`` show the same).
3. **Reward-model drift** (``onpolicy_reward_model``): per GRPO epoch the reward model's mean score of the
   policy's samples, the exact oracle accuracy of the same samples, and the val oracle accuracy of the greedy
   selections (means over seeds); and the val accuracy at the epoch each oracle-free stopping rule picks.
   ``runs/<group>/reward_model.json`` holds the model's held-out calibration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EXPERIMENTS = ("rce_only", "scheme5_6", "onpolicy", "onpolicy_realised", "onpolicy_reward_model", "onpolicy_dapo",
               "onpolicy_estimators", "onpolicy_budget")


def _ci(xs) -> tuple[float, float]:
    from leverjax.core import stats

    return stats.mean_ci([float(x) for x in xs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="results/bench_onpolicy")
    parser.add_argument("--reuse", action="store_true", help="read DIR as it is (no training)")
    args = parser.parse_args()
    if not (args.reuse and os.path.isfile(os.path.join(args.out, "summary.json"))):
        t0 = time.perf_counter()
        cmd = [sys.executable, os.path.join(ROOT, "run.py"), f"--experiment={','.join(EXPERIMENTS)}",
               f"--seeds={args.seeds}", f"--out={args.out}"]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"grid trained in {time.perf_counter() - t0:.0f} s", flush=True)

    from leverjax.report.load import _context, _ref_mean, labelled_trajectories, training_calls

    ctx = _context(args.out, "rce_only")
    _, _, scale, bounds, get, _ = ctx.headline()
    base = ctx.finished("rce_only")
    ceiling = _ref_mean(ctx.references, "test", "oracle_greedy", ctx.shots) * scale
    base_mean = np.mean([get(r) for r in base.values()]) * scale
    print(f"\nrce_only {base_mean:.2f}%, oracle-greedy ceiling {ceiling:.2f}% (gap {ceiling - base_mean:.2f} pts)")
    print(f"\n{'run':<36} {'n':>2} {'accuracy %':>16} {'Δ to rce_only (pts)':>22} {'gap closed':>11}")
    for variant in ctx.runs:
        runs = ctx.finished(variant)
        acc = _ci([get(r) * scale for r in runs.values()])
        seeds = sorted(set(runs) & set(base))
        d = _ci([(get(runs[s]) - get(base[s])) * scale for s in seeds]) if variant != "rce_only" else None
        closed = (acc[0] - base_mean) / (ceiling - base_mean) if ceiling > base_mean else float("nan")
        print(f"{variant:<36} {len(runs):>2} {acc[0]:>9.2f} ± {acc[1]:.2f} "
              + (f"{d[0]:>+14.2f} ± {d[1]:.2f}{' *' if abs(d[0]) > d[1] else '  '} {100 * closed:>9.0f}%"
                 if d else f"{'—':>22}"))

    labels = labelled_trajectories(args.out)
    print(f"\n{'run':<36} {'labels':>8} {'calls while training':>21} {'total':>9} {'accuracy %':>11}")
    for variant in ctx.runs:
        runs = ctx.finished(variant)
        calls = np.mean([training_calls(r) for r in runs.values()])
        acc = np.mean([get(r) * scale for r in runs.values()])
        print(f"{variant:<36} {labels.get(variant, 0):>8,} {calls:>21,.0f} {labels.get(variant, 0) + calls:>9,.0f} "
              f"{acc:>11.2f}")

    rm = ctx.finished("onpolicy_reward_model") if "onpolicy_reward_model" in ctx.runs else {}
    if rm:
        epochs = sorted(e for (p, e) in next(iter(rm.values())).epochs if p == "grpo")

        def per_epoch(metric):
            return np.array([[r.epochs[("grpo", e)].get(metric, np.nan) for e in epochs] for r in rm.values()],
                            float)

        score, exact = per_epoch("train_reward"), per_epoch("train_oracle_reward")
        val_acc = np.mean([per_epoch(f"val_oracle_acc_{n}") for n in ctx.shots], 0) * 100
        print("\nreward-model drift (means over seeds): GRPO epoch, reward-model score of the samples, oracle "
              "accuracy of the same samples, gap, val oracle accuracy of the greedy selections (%)")
        for i, e in enumerate(epochs):
            print(f"  {e:>3}  {score[:, i].mean():.4f}  {exact[:, i].mean():.4f}  "
                  f"{score[:, i].mean() - exact[:, i].mean():+.4f}  {val_acc[:, i].mean():.3f}")
        rules = {"last epoch": lambda r: len(epochs) - 1,
                 "min val_loss": lambda r: int(np.nanargmin(r["val_loss"])),
                 "max val_expected_reward": lambda r: int(np.nanargmax(r["val_expected_reward"])),
                 "oracle (not available on real data)": lambda r: int(np.nanargmax(r["acc"]))}
        series = [{"val_loss": per_epoch("val_loss")[j], "val_expected_reward": per_epoch("val_expected_reward")[j],
                   "acc": val_acc[j]} for j in range(len(rm))]
        print("\nstopping rules: the val oracle accuracy (%) at the GRPO epoch each picks, mean ± 95% CI over seeds")
        for name, rule in rules.items():
            picked = [s["acc"][rule(s)] for s in series]
            m, h = _ci(picked)
            print(f"  {name:<38} {m:.3f} ± {h:.3f}  (epochs {[rule(s) + 1 for s in series]})")
        for group in sorted(os.listdir(os.path.join(args.out, "runs"))):
            path = os.path.join(args.out, "runs", group, "reward_model.json")
            if os.path.isfile(path):
                with open(path) as f:
                    cal = json.load(f)
                print(f"\nreward model (held out: {cal['held_out']}, {cal['examples']} labelled trajectories): "
                      f"MSE {cal['mse']:.4f} (predicting the mean: {cal['mse_of_the_mean']:.4f}), Pearson r "
                      f"{cal['pearson_r']:.3f}, within-query Spearman {cal['within_query_spearman']:.3f} "
                      f"({cal['queries_ranked']} queries)")
                print("  reliability: " + ", ".join(
                    f"[{b['bin'][0]:.1f},{b['bin'][1]:.1f}) n={b['count']} pred {b['mean_prediction']:.3f} "
                    f"label {b['mean_label']:.3f}" for b in cal["reliability"] if b["count"]))
                break


if __name__ == "__main__":
    main()
