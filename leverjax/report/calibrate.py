"""Does the simulator behave like the real data? The calibration check of a preset against the reports.

    python -m leverjax.data.calibrate --preset=okvqa [--seeds=8] [--data_seed=0] [--out=results/calibrate_okvqa]

Trains the reports' baseline, ``rce_only`` (SFT 20 + RCE 5 epochs, with the preset's recipe: ``vqav2`` trains
the reference's RCE batch of 1), for a few seeds on the preset's data set (``--data_seed``, default 0: the set
``run.py`` uses for the default preset; another seed draws another world of the same preset) through the grid
launcher (:func:`leverjax.run.launch.run_grid`: the same programs, results directory and reference selections as any
grid), and prints one row per phenomenon the reports observed on real data: the report's value, the
simulator's (mean and 95% t interval over seeds), the tolerance and whether it holds.

=================================  ==============================================================================
trained selector vs similarity     test oracle accuracy at 1 and 2 shots minus similarity retrieval's: at least
                                   +1 point, with an interval over seeds that excludes 0
trained selector vs random         the same against random selection: a larger gain than over retrieval
sizes                              the trained selector's level at 1 shot, its gains over the original's random
                                   baseline (whole set) and over retrieval (means over shots 1–4), that
                                   baseline's falling curve: within the real tables' ranges
realised noise                     the standard deviation of a 100-question mean of realised acc@1: 3.5–6.5
                                   points (the reports: 59.4 on 100 questions, 50.95 on 800)
shot curve                         okvqa (flat): every shot's accuracy (mean over seeds) within ±1.5 points of
                                   the curve's mean; vqav2 (falling): accuracy at 4 shots minus at 1 shot between
                                   −9 and −4 points
more training queries (vqav2)      1.5× the training queries (the preset's) against 2/3 of them (a seeded
                                   subset; val and test unchanged), paired by seed: at least +2 points at 1 shot
SFT moves the policy               val oracle accuracy at 2 shots after the SFT phase minus that of the same
                                   seed's initial network: above 0, interval excluding 0
=================================  ==============================================================================

Random and similarity retrieval have no seed (exact expectation, a fixed selection), so a Δ to them has the
selector's spread over seeds. :func:`calibrate` with smaller sizes and epochs is what the tests run.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from leverjax import command as command_lib
from leverjax.core import config as config_lib
from leverjax.core import stats
from leverjax.core.evaluate import Evaluator
from leverjax.core.train import Pipeline
from leverjax.data.device import DeviceData
from leverjax.data.synth import get_preset, make_synthetic, recipe_flags
from leverjax.errors import ConfigError
from leverjax.fileio import write_text_atomic
from leverjax.report.load import group_results, load_runs
from leverjax.run import launch
from leverjax.run import registry as experiments

# The reports' values (Qwen2.5-VL-3B; Lever-Plus README §3): accuracy of the trained selector at 1..4 shots, and
# of random demonstrations drawn from the whole training set (OKVQA, full validation set).
REPORT_CURVES = {"okvqa": (48.55, 47.75, 48.15, 47.45), "vqav2": (69.4, 65.2, 63.2, 62.7)}
REPORT_RANDOM_ALL = {"okvqa": (50.59, 47.04, 45.48, 44.93)}
# The sizes the real tables show (issue: "presets with real magnitudes"), in points
GAIN_OVER_RANDOM_ALL = (0.5, 4.0)   # trained − whole-set random, mean over shots 1–4
RANDOM_ALL_FALL = (3.0, 8.5)        # whole-set random: acc@1 − acc@4
GAIN_OVER_RETRIEVAL = (0.0, 3.0)    # trained − similarity retrieval, mean over shots 1–4
LEVEL_AT_1 = {"okvqa": (48.0, 5.0), "vqav2": (70.0, 5.0)}  # trained selector's accuracy at 1 shot: centre ± width
# The real tables' noise: the same selector scored 59.4 at 1 shot on 100 questions and 50.95 on 800. The standard
# deviation of a 100-question mean must make such a gap ordinary (within 2.5 SD) without exceeding a binomial's.
REPORT_SUBSET_GAP = (59.4, 50.95)
SUBSET_SD = (3.5, 6.5)  # points, of the realised acc@1 of 100 questions
CURVE_TOLERANCE = {"okvqa": (-1.5, 1.5), "vqav2": (-9.0, -4.0)}
MIN_GAIN_OVER_RETRIEVAL = 1.0
MIN_DATA_GAIN = 2.0
MIN_SFT_GAIN = 0.0  # the direction: at the real sizes every effect is a few points
SUBSET_SHARE = 2.0 / 3.0  # 1.5× the training queries is the preset's full training set


@dataclasses.dataclass
class Row:
    phenomenon: str
    report: str
    value: str
    tolerance: str
    passed: bool
    numbers: dict = dataclasses.field(default_factory=dict)


def _ci(values) -> tuple[float, float, float]:
    mean, half = stats.mean_ci(values)
    return mean, mean - half, mean + half


def _text(values, digits: int = 1) -> str:
    mean, lo, hi = _ci(values)
    if math.isnan(mean):
        return "—"
    if math.isnan(lo):
        return f"{mean:+.{digits}f} (one seed)"
    return f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def subset_train(ds, share: float = SUBSET_SHARE, seed: int = 0):
    """``ds`` with a seeded random ``share`` of its training queries (val and test queries all kept)."""
    train = np.flatnonzero(ds.split == 0)
    keep = np.sort(np.random.default_rng(seed).choice(train, size=max(1, int(round(share * len(train)))),
                                                      replace=False))
    return ds.subset(np.sort(np.concatenate([keep, np.flatnonzero(ds.split != 0)])))


def _per_seed(directory: str) -> dict[int, Any]:
    runs = load_runs(os.path.join(directory, "metrics.csv"))
    return dict(next(iter(runs.values()))) if runs else {}


def _references(directory: str) -> dict:
    with open(os.path.join(directory, "baselines.json")) as f:
        return json.load(f)["sets"][0]["splits"]["test"]["oracle"]


def _init_val_acc(cfg, ds, seeds) -> dict[int, float]:
    """Val oracle accuracy at 2 shots of each seed's initial network (the Runner's initialisation)."""
    pipe = Pipeline(cfg, ds)
    evaluator = Evaluator(pipe)
    data = DeviceData.from_dataset(ds)
    hp = pipe.hyperparameters()
    out = {}
    for seed in seeds:
        state = pipe.init_state(data, hp, jax.random.PRNGKey(seed))
        metrics = evaluator.evaluate(state["params"], state["ref_params"], data, hp, "val")
        out[seed] = float(jnp.asarray(metrics["oracle_acc_2"]))
    return out


def calibrate(preset: str = "okvqa", *, seeds: int = 8, out: str | None = None, data_seed: int = 0,
              sizes: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None,
              printer: Callable[[str], None] = print) -> list[Row]:
    """Trains what the table needs into ``out`` and returns its rows (module docstring).

    ``sizes``: generator options instead of the preset's (smaller sets for tests); ``overrides``: config
    fields for every run (fewer epochs for tests)."""
    recipe = get_preset(preset).recipe  # an unknown preset is one line, before anything is trained

    out = out or os.path.join("results", f"calibrate_{preset}")
    overrides = training_overrides(preset, overrides)
    if recipe:
        printer(f"calibrate: {preset} is calibrated under its recipe, {recipe_flags(recipe)}")
    t0 = time.perf_counter()
    ds = make_synthetic(preset=preset, seed=data_seed, **dict(sizes or {}))
    quiet = lambda s: None  # noqa: E731

    def train(name: str, data) -> dict[int, Any]:
        directory = os.path.join(out, name)
        t = time.perf_counter()
        launch.run_grid(["rce_only"], overrides, seeds=seeds, out=directory, dataset=data, report=False,
                        tables=False, printer=quiet, command=f"leverjax.data.calibrate --preset={preset}")
        printer(f"calibrate: {name}: rce_only × {seeds} seeds trained in {time.perf_counter() - t:.0f}s")
        return _per_seed(directory)

    full = train("full", ds)
    refs = _references(os.path.join(out, "full"))
    acc = {n: [100 * full[s].final[f"test_oracle_acc_{n}"] for s in sorted(full)] for n in (1, 2, 3, 4)}
    rows = []
    for n in (1, 2):
        sim = 100 * refs["similarity"]["acc"][str(n)]
        rnd = 100 * refs["random"]["acc"][str(n)]
        d_sim = [a - sim for a in acc[n]]
        d_rnd = [a - rnd for a in acc[n]]
        m, lo, _ = _ci(d_sim)
        rows.append(Row(f"trained selector − similarity retrieval, {n} shot{'s' if n > 1 else ''} (pts)",
                        "> 0 (Lever-LM line: the trained selector beats retrieval)", _text(d_sim),
                        f"≥ +{MIN_GAIN_OVER_RETRIEVAL:.0f}, CI excludes 0",
                        bool(m >= MIN_GAIN_OVER_RETRIEVAL and lo > 0), {"selector": acc[n], "similarity": sim}))
        rows.append(Row(f"trained selector − random selection, {n} shot{'s' if n > 1 else ''} (pts)",
                        "larger than over retrieval", _text(d_rnd), "> the row above",
                        bool(_ci(d_rnd)[0] > m), {"random": rnd}))
    rows += magnitude_rows(preset, acc, refs)
    rows.append(noise_row(os.path.join(out, "full")))
    rows.append(curve_row(preset, acc))
    if target_of(preset) == "vqav2":
        small = train("two_thirds_train", subset_train(ds, seed=data_seed))
        gain = [100 * (full[s].final["test_oracle_acc_1"] - small[s].final["test_oracle_acc_1"])
                for s in sorted(set(full) & set(small))]
        rows.append(Row("1.5× training queries: acc@1 gain (pts)", "+5.6 (1,894 → 2,809 queries)",
                        _text(gain), f"≥ +{MIN_DATA_GAIN:.0f}", bool(_ci(gain)[0] >= MIN_DATA_GAIN)))
    cfg = config_lib.replace(experiment_config("rce_only"), {**overrides, "seeds": 1})
    init = _init_val_acc(cfg, ds, sorted(full))
    sft = {}
    for s, run in full.items():
        epochs = [pe for pe in run.ordered_epochs() if pe[0] == "sft"]
        if epochs:
            sft[s] = run.epochs[epochs[-1]].get("val_oracle_acc_2")
    gain = [100 * (sft[s] - init[s]) for s in sorted(sft) if sft[s] is not None]
    m, lo, _ = _ci(gain)
    before = 100 * float(np.mean([init[s] for s in sft])) if sft else math.nan
    after = 100 * float(np.mean([sft[s] for s in sft])) if sft else math.nan
    rows.append(Row("SFT vs its initialisation: val acc@2 (pts)", "v2 SFT is the strong baseline",
                    f"{_text(gain)} ({before:.1f} → {after:.1f})" if gain else "— (no SFT phase)",
                    "> 0, CI excludes 0", bool(gain) and bool(m > MIN_SFT_GAIN and lo > 0)))
    printer(f"calibrate: {preset}: {time.perf_counter() - t0:.0f}s in all; results in {out}")
    return rows


def training_overrides(preset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config fields every calibration run of ``preset`` sets: no GRPO, the preset's recipe
    (:class:`leverjax.data.synth.Preset`), then ``overrides`` (the tests' fewer epochs)."""
    return {"grpo_epochs": 0, **get_preset(preset).recipe, **(overrides or {})}


def magnitude_rows(preset: str, acc: Mapping[int, list], refs: Mapping[str, Any]) -> list[Row]:
    """The rows of the real tables' sizes: the trained selector's level at 1 shot, its gains over the
    original's random baseline (whole set) and over similarity retrieval (means over shots 1–4), and the
    fall of the random baseline's shot curve. ``acc``: shot -> per-seed test accuracy (%); ``refs``: the
    test split's oracle references (``baselines.json``)."""
    target = target_of(preset)
    shots = (1, 2, 3, 4)
    ref = lambda name, n: 100 * refs[name]["acc"][str(n)]  # noqa: E731
    seeds = range(len(acc[1]))
    mean_over_shots = lambda name: [float(np.mean([acc[n][i] - ref(name, n) for n in shots]))  # noqa: E731
                                    for i in seeds]
    centre, width = LEVEL_AT_1[target]
    level = _ci(acc[1])[0]
    real = REPORT_CURVES[target]
    rows = [Row("trained selector at 1 shot (%)", f"{real[0]:.2f}", f"{level:.1f} [{_ci(acc[1])[1]:.1f}, "
                f"{_ci(acc[1])[2]:.1f}]", f"{centre:.0f} ± {width:.0f}", bool(abs(level - centre) <= width))]
    random_all = [ref("random_all", n) for n in shots]
    real_random = REPORT_RANDOM_ALL.get(target)
    gain = mean_over_shots("random_all")
    low, high = GAIN_OVER_RANDOM_ALL
    report = (f"{np.mean(real) - np.mean(real_random):+.1f} (v2 selector, 800 questions, vs random, full val)"
              if real_random else "not reported")
    rows.append(Row("trained selector − random demonstrations from the whole set, mean over shots 1–4 (pts)",
                    report, _text(gain), f"{low:+.1f} to {high:+.1f}", bool(low <= _ci(gain)[0] <= high),
                    {"random_all": random_all}))
    fall = random_all[0] - random_all[3]
    low, high = RANDOM_ALL_FALL
    report = (f"{real_random[0] - real_random[3]:+.1f} ({' / '.join(map(str, real_random))})" if real_random
              else "not reported")
    rows.append(Row("random demonstrations from the whole set: acc@1 − acc@4 (pts)", report,
                    f"{fall:+.1f} ({' / '.join(f'{v:.1f}' for v in random_all)})", f"{low:+.1f} to {high:+.1f}",
                    bool(low <= fall <= high)))
    gain = mean_over_shots("similarity")
    low, high = GAIN_OVER_RETRIEVAL
    rows.append(Row("trained selector − similarity retrieval, mean over shots 1–4 (pts)",
                    "small (Lever-LM line: +1 to +3.5 over random, averaged over shots)", _text(gain),
                    f"{low:+.1f} to {high:+.1f}", bool(low <= _ci(gain)[0] <= high)))
    return rows


def question_sd(directory: str, shot: int = 1) -> list[float]:
    """Per seed, the standard deviation (points) of a 100-question mean of the trained selector's realised
    accuracy at ``shot``, from the spread of its per-question scores (``results.json``)."""
    out = []
    for content in group_results(directory):
        for run in content.get("runs", []):
            scores = (run.get("questions") or {}).get(f"realised_acc_{shot}")
            if scores and len(scores) > 1:
                out.append(100 * float(np.std(scores, ddof=1)) / math.sqrt(100))
    return out


def noise_row(directory: str) -> Row:
    """The realised scores' noise against the real tables' (100 vs 800 questions)."""
    sds = question_sd(directory)
    low, high = SUBSET_SD
    big, small = REPORT_SUBSET_GAP
    if not sds:
        return Row("realised acc@1 of 100 test questions: standard deviation (pts)", "", "— (no realised scores)",
                   f"{low:.1f} to {high:.1f}", False)
    sd = float(np.mean(sds))
    return Row("realised acc@1 of 100 test questions: standard deviation (pts)",
               f"{big} on 100 questions vs {small} on 800 (a gap of {big - small:.2f})",
               f"{sd:.1f} (the gap is {(big - small) / sd:.1f} SD)", f"{low:.1f} to {high:.1f}",
               bool(low <= sd <= high))


def target_of(preset: str) -> str:
    """The report a preset is checked against: vqav2's for vqav2, OKVQA's for the others (v1 included)."""
    return "vqav2" if preset == "vqav2" else "okvqa"


def _max_deviation(curve) -> float:
    """The largest distance of a point of ``curve`` from the curve's mean."""
    c = np.asarray(curve, np.float64)
    return float(np.max(np.abs(c - c.mean())))


def curve_row(preset: str, acc: Mapping[int, list]) -> Row:
    """The shot-curve row: okvqa's curve is flat (every shot within the tolerance of the curve's mean, the
    means over seeds), vqav2's falls (acc@4 − acc@1 within the tolerance)."""
    target = target_of(preset)
    report = REPORT_CURVES[target]
    low, high = CURVE_TOLERANCE[target]
    means = [float(np.mean(acc[n])) for n in (1, 2, 3, 4)]
    drop = [a4 - a1 for a1, a4 in zip(acc[1], acc[4])]
    curve = " / ".join(f"{m:.1f}" for m in means)
    if target == "okvqa":
        dev = _max_deviation(means)
        return Row("shot curve 1→4: largest distance from its mean (pts)",
                   f"{_max_deviation(report):.1f} ({' / '.join(map(str, report))})",
                   f"{dev:.1f} ({curve}; acc@4 − acc@1 {_text(drop)})", f"≤ {high:.1f}", bool(dev <= high),
                   {"curve": dict(acc)})
    return Row("shot curve: acc@4 − acc@1 (pts)",
               f"{report[3] - report[0]:+.1f} ({' / '.join(map(str, report))})",
               f"{_text(drop)} ({curve})", f"{low:+.1f} to {high:+.1f}", bool(low <= _ci(drop)[0] <= high),
               {"curve": dict(acc)})


def experiment_config(name: str):
    return experiments.get(name).config


def format_rows(preset: str, rows: list[Row], seeds: int, data_seed: int = 0) -> str:
    """The calibration table (Markdown)."""
    recipe = get_preset(preset).recipe
    with_recipe = f" with {recipe_flags(recipe)}" if recipe else ""
    world = f", data seed {data_seed}" if data_seed else ""
    lines = [f"Calibration of preset `{preset}` (rce_only{with_recipe}, {seeds} seeds{world}; simulator: mean [95% CI "
             "over seeds])", "",
             "| phenomenon | report | simulator | tolerance | pass |", "|:---|:---|:---|:---|:---|"]
    lines += [f"| {r.phenomenon} | {r.report} | {r.value} | {r.tolerance} | {'pass' if r.passed else 'FAIL'} |"
              for r in rows]
    passed = sum(r.passed for r in rows)
    lines += ["", f"{passed} of {len(rows)} phenomena within tolerance."]
    return "\n".join(lines) + "\n"


def _compilation_cache() -> None:
    """The persistent compilation cache ``run.py`` uses (``LEVERJAX_CACHE_DIR``)."""
    path = os.environ.get("LEVERJAX_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "leverjax", "xla"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _cli() -> None:
    flags.DEFINE_string("preset", "okvqa", "Simulator preset to check (leverjax.data.synth.PRESETS).")
    flags.DEFINE_integer("seeds", 8, "Training seeds (the intervals are over them).")
    flags.DEFINE_integer("data_seed", 0, "Seed of the preset's data set: the world checked (0: the one "
                         "`python -m leverjax.data.synth` writes).")
    flags.DEFINE_string("out", None, "Results directory [default results/calibrate_<preset>].")
    FLAGS = flags.FLAGS

    def main(argv: list[str]) -> None:
        _compilation_cache()
        if FLAGS.seeds < 2:
            raise ConfigError(f"--seeds={FLAGS.seeds} must be at least 2 (the intervals are over seeds)")
        if FLAGS.data_seed < 0:
            raise ConfigError(f"--data_seed={FLAGS.data_seed} must be at least 0")
        rows = calibrate(FLAGS.preset, seeds=FLAGS.seeds, out=FLAGS.out, data_seed=FLAGS.data_seed)
        text = format_rows(FLAGS.preset, rows, FLAGS.seeds, FLAGS.data_seed)
        print(text, end="")
        out = FLAGS.out or os.path.join("results", f"calibrate_{FLAGS.preset}")
        write_text_atomic(os.path.join(out, "calibration.md"), text)

    command_lib.run(main, command='python -m leverjax.data.calibrate',
                    about='Checks a simulator preset against the phenomena the reports saw on real data.')


if __name__ == "__main__":
    _cli()
