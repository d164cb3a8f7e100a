"""The grid report from hand-written results directories: the numbers it prints are the means, 95% CIs
and paired differences of a reference formula written here without NumPy or SciPy; the summary's wording
follows planted results; proportions keep their intervals in [0, 1]; the plots are real PNGs."""
import csv
import json
import math
import os
import re
import struct
import subprocess
import sys

import pytest

from leverjax.core import stats
from leverjax.report import estimates, load
from leverjax.report import markdown as report
from leverjax.run.results import CSV_COLUMNS

# Two-sided 95% Student t quantiles, df = 1..6 (standard table values).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447}
SEEDS = (0, 1, 2, 3, 4)
ACC = {  # variant -> shot -> per-seed test oracle accuracy (fractions)
    "rce_only": {1: [0.480, 0.490, 0.470, 0.500, 0.485], 2: [0.470, 0.480, 0.475, 0.490, 0.470],
                 3: [0.480, 0.475, 0.485, 0.490, 0.470], 4: [0.470, 0.475, 0.480, 0.470, 0.475]},
    "scheme5": {1: [0.500, 0.495, 0.480, 0.515, 0.490], 2: [0.480, 0.490, 0.470, 0.495, 0.490],
                3: [0.470, 0.480, 0.480, 0.470, 0.475], 4: [0.475, 0.470, 0.480, 0.475, 0.480]},
}
VAL = {  # variant -> per-seed val expected reward by GRPO epoch (0 = end of RCE)
    "rce_only": [[0.90], [0.92], [0.88], [0.91], [0.89]],
    "scheme5": [[0.90, 0.93, 0.95], [0.92, 0.93, 0.94], [0.88, 0.90, 0.93], [0.91, 0.95, 0.96], [0.89, 0.90, 0.91]],
}


def reference_ci(xs):
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, T975[n - 1] * sd / math.sqrt(n)


def write_csv(directory, failed_status=True, adaptive=False, variants=("rce_only", "scheme5"), seeds=SEEDS):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for g, variant in [(f"g{i:02d}", v) for i, v in enumerate(variants, 1)]:
            for i, seed in enumerate(seeds):
                head = (g, variant, variant, seed)
                vals = VAL[variant][i]
                w.writerow((*head, "sft", 1, "val_expected_reward", 0.5, ""))
                w.writerow((*head, "rce", 1, "val_expected_reward", vals[0], ""))
                w.writerow((*head, "rce", 1, "val_oracle_acc_1", 0.4, ""))
                for e, v in enumerate(vals[1:], 1):
                    w.writerow((*head, "grpo", e, "val_expected_reward", v, ""))
                    w.writerow((*head, "grpo", e, "train_kl", 0.01 * e, ""))
                    w.writerow((*head, "grpo", e, "val_oracle_acc_1", 0.4 + 0.01 * e, ""))
                    if adaptive:  # a STOP selector's accuracy at its own shot count: not a shot count
                        w.writerow((*head, "grpo", e, "val_oracle_acc_adaptive", 0.9, ""))
                for shot in range(1, 5):
                    w.writerow((*head, "final", "", f"test_oracle_acc_{shot}", ACC[variant][shot][i], ""))
                    w.writerow((*head, "final", "", f"best_test_oracle_acc_{shot}", ACC[variant][shot][i], ""))
                w.writerow((*head, "final", "", "test_expected_reward", vals[-1], ""))
    if failed_status:
        os.makedirs(os.path.join(directory, "status"), exist_ok=True)
        with open(os.path.join(directory, "status", "scheme7.seed=0.json"), "w") as f:
            json.dump({"run": "scheme7/seed=0", "variant": "scheme7", "seed": 0, "state": "failed",
                       "kind": "diverged", "reason": "grpo epoch 2: train_loss is nan"}, f)


def cells(text, heading, row_name):
    """The cells of the row ``row_name`` in the first table after ``heading``."""
    section = text[text.index(heading):]
    for line in section.splitlines():
        if line.startswith("| ") and line.split("|")[1].strip().strip("*") == row_name:
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row {row_name!r} after {heading!r}")


def numbers(cell):
    return [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?", cell)]


def close(cell, mean, half):
    """``cell`` is "m ± h" rounded to the printed places: both numbers within half a unit of the last one."""
    got = numbers(cell)
    places = len(cell.split("±")[0].strip().split(".")[1]) if "." in cell.split("±")[0] else 0
    tol = 0.51 * 10 ** -places
    assert len(got) == 2 and abs(got[0] - mean) <= tol and abs(got[1] - half) <= tol, (cell, mean, half)
    # the rounding follows the interval: two significant digits of the half width
    assert places == stats.decimals(half) or places == stats.decimals(float(cell.split("±")[1])), (cell, half)


def test_report_numbers_match_the_reference_formula(tmp_path):
    write_csv(tmp_path)
    path = report.write_report(str(tmp_path), plots=False)
    text = open(path).read()
    head = "## The researchers' table"
    base_row, row = cells(text, head, "rce_only"), cells(text, head, "scheme5")
    assert base_row[1] == row[1] == "5"
    for shot in range(1, 5):
        close(row[1 + shot], *reference_ci([100 * a for a in ACC["scheme5"][shot]]))
        close(base_row[1 + shot], *reference_ci([100 * a for a in ACC["rce_only"][shot]]))
        diffs = [100 * (a - b) for a, b in zip(ACC["scheme5"][shot], ACC["rce_only"][shot])]
        close(row[5 + shot].rstrip(" *"), *reference_ci(diffs))
        assert row[5 + shot].startswith(("+", "-"))
    mean_diffs = [100 * sum(ACC["scheme5"][s][i] - ACC["rce_only"][s][i] for s in range(1, 5)) / 4 for i in range(5)]
    close(row[10].rstrip(" *"), *reference_ci(mean_diffs))
    # acc@1: the difference's CI excludes 0 and is starred (5 seeds); the baseline's own Δ cells are dashes.
    m, h = reference_ci([100 * (a - b) for a, b in zip(ACC["scheme5"][1], ACC["rce_only"][1])])
    assert abs(m) > h and row[6].endswith("*")
    assert base_row[6:] == ["—"] * 5
    assert "Δ acc@1 vs rce_only (pts)" in text  # the Δ column says what it is
    assert "baseline **rce_only**" in text  # the default baseline


def test_equal_epoch_comparison_pairs_seeds_and_holds_a_shorter_baseline(tmp_path):
    write_csv(tmp_path)
    text, _ = report.build_report(str(tmp_path), plots=False)
    head = "### val expected reward"
    table = text[text.index(head):]
    header = next(line for line in table.splitlines() if line.startswith("| run"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["run", "before GRPO", "GRPO 1", "GRPO 2"]
    row = cells(text, head, "scheme5")
    close(row[2], *reference_ci([v[1] for v in VAL["scheme5"]]))
    base_row = cells(text, head, "rce_only")
    close(base_row[1], *reference_ci([v[0] for v in VAL["rce_only"]]))
    assert base_row[2] == ""  # no GRPO epoch 1
    delta = cells(text, "Δ to **rce_only**", "scheme5")
    # GRPO epoch 2 against the baseline held at its last (pre-GRPO) value, seed by seed.
    close(delta[3].rstrip(" *"), *reference_ci([a[2] - b[0] for a, b in zip(VAL["scheme5"], VAL["rce_only"])]))
    assert numbers(delta[1]) == [0.0, 0.0]


def test_final_tables_failed_runs_and_another_baseline(tmp_path):
    write_csv(tmp_path)
    text, _ = report.build_report(str(tmp_path), baseline="scheme5", plots=False)
    assert "baseline **scheme5**" in text
    row = cells(text, "## The researchers' table", "rce_only")
    diffs = [100 * (b - a) for a, b in zip(ACC["scheme5"][1], ACC["rce_only"][1])]
    close(row[6].rstrip(" *"), *reference_ci(diffs))
    best = cells(text, "best-epoch parameters", "scheme5")
    close(best[2], *reference_ci([100 * a for a in ACC["scheme5"][1]]))
    failed = cells(text, "## Failed runs", "scheme7")
    assert failed[2] == "diverged" and "train_loss is nan" in failed[3]
    with pytest.raises(ValueError, match="not a run of this grid"):
        report.build_report(str(tmp_path), baseline="nope", plots=False)


# -- statistics ---------------------------------------------------------------------------------------


def test_t_quantiles_and_rounding():
    for df, t in T975.items():
        assert stats.t_critical(df) == pytest.approx(t, abs=6e-4)
    assert math.isnan(stats.t_critical(0))
    assert stats.decimals(0.2134) == 2 and stats.decimals(0.0123) == 3 and stats.decimals(12.3) == 0
    assert stats.decimals(math.nan, default=4) == 4 and stats.decimals(0.0, default=3) == 3
    assert stats.format_ci(1.23456, 0.2134) == "1.23 ± 0.21"
    assert stats.format_ci(47.981, 0.537) == "47.98 ± 0.54"
    assert estimates.Estimate(-0.00001, 0.0, 5).text(2, signed=True) == "+0.00 ± 0.00"  # no "-0.00"
    assert estimates.Estimate(-1e-9, 1e-9, 5).text(2, signed=True) == "+0.0000 ± 0.0000"  # no wall of zeros


@pytest.mark.parametrize("values", [[0.0] * 5, [1.0] * 5, [0.0, 1.0], [1.0, 1.0, 0.9], [0.0, 0.02, 0.0]])
def test_proportion_intervals_stay_in_the_unit_interval(values):
    mean, lo, hi = stats.bounded_ci(values)
    assert 0.0 <= lo <= mean <= hi <= 1.0
    m, h = stats.mean_ci(values)
    assert lo == pytest.approx(max(0.0, m - h)) and hi == pytest.approx(min(1.0, m + h))
    est = estimates.estimate(values, 1.0, load.bounds_of("test_changed_vs_ref"))
    assert all(0.0 <= x <= 1.0 for x in numbers(est.text(3)))
    if m - h < 0 or m + h > 1:  # the clip binds: shown as [low, high], not as an impossible ± span
        assert "[" in est.text(3) and "±" not in est.text(3)
    pct = estimates.estimate(values, 100.0, load.bounds_of("test_oracle_acc_1", 100.0))
    assert all(0.0 <= x <= 100.0 for x in numbers(pct.text(2)))


# -- the summary, from planted results ---------------------------------------------------------------

PLANTED_BASE = [0.470, 0.480, 0.475, 0.485, 0.478]
PLANTED = {  # variant -> (offset of the test oracle accuracy per seed, test expected reward per seed)
    "rce_only": ([0.0] * 5, [0.90, 0.91, 0.92, 0.90, 0.91]),
    "better": ([0.030, 0.028, 0.033, 0.031, 0.029], [0.95, 0.96, 0.97, 0.95, 0.96]),
    "worse": ([-0.020, -0.022, -0.018, -0.021, -0.019], [0.94, 0.96, 0.96, 0.95, 0.95]),
    "same": ([0.002, -0.003, 0.001, -0.001, 0.0015], [0.90, 0.92, 0.91, 0.91, 0.90]),
}


def write_planted(directory, seeds=5):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for variant, (offsets, rewards) in PLANTED.items():
            for seed in range(seeds):
                head = ("g01", variant, variant, seed)
                w.writerow((*head, "rce", 1, "val_oracle_acc_1", PLANTED_BASE[seed], ""))
                w.writerow((*head, "rce", 1, "val_changed_vs_ref", 1.0 if variant == "worse" else 0.0, ""))
                for shot in (1, 2):
                    w.writerow((*head, "final", "", f"test_oracle_acc_{shot}", PLANTED_BASE[seed] + offsets[seed], ""))
                w.writerow((*head, "final", "", "test_expected_reward", rewards[seed], ""))
                w.writerow((*head, "final", "", "test_changed_vs_ref", float(variant != "rce_only") * (seed % 2), ""))
        w.writerow(("g02", "failed", "failed", 0, "rce", 1, "val_oracle_acc_1", 0.4, ""))  # diverged: no final


def summary_of(text):
    return text[text.index("## Summary"):text.index("## Runs")]


def test_summary_wording_follows_planted_results(tmp_path):
    write_planted(tmp_path)
    text, _ = report.build_report(str(tmp_path), plots=False)
    s = summary_of(text)
    assert "- **Seeds:** 5 per run" in s and "Too few seeds" not in s
    assert re.search(r"- \*\*better\*\* is \*\*higher\*\* than \*\*rce_only\*\* beyond its CI: \+3\.0\d* pts", s)
    assert re.search(r"- \*\*worse\*\* is \*\*lower\*\* than \*\*rce_only\*\* beyond its CI: -2\.0\d* pts", s)
    assert "- **same**: no difference from **rce_only** beyond the CI" in s
    # worse: the offline expected reward rose beyond its CI while the accuracy fell beyond its CI
    assert "**Offline metric and accuracy disagree** for **worse**" in s
    assert "disagree** for **better**" not in s and "disagree** for **same**" not in s
    assert "**failed**: no finished seed (see the failed runs); nothing to compare." in s
    # ordering: findings first (higher, then lower), then the rest
    assert s.index("**better**") < s.index("**worse**") < s.index("**same**")
    row = cells(text, "## The researchers' table", "better")
    assert row[-1].endswith("*")
    assert not cells(text, "## The researchers' table", "same")[-1].endswith("*")


def test_summary_with_two_seeds_has_no_stars_and_says_intervals_are_too_wide(tmp_path):
    write_planted(tmp_path, seeds=2)
    text, _ = report.build_report(str(tmp_path), plots=False)
    s = summary_of(text)
    assert "**Too few seeds to conclude:** with 2 seeds per run the 95% intervals are too wide" in s
    assert "beyond its CI" not in s and "disagree" not in s
    assert "- **better**: +" in s and "too few seeds to conclude" in s
    tables = text[text.index("## The researchers' table"):]
    assert not re.search(r"\d \*", tables)  # no starred number anywhere
    header = cells(text, "## Test metrics, final parameters", "run")
    changed = cells(text, "## Test metrics, final parameters", "better")[header.index("changed")]  # 0, 1 by seed
    assert all(0.0 <= x <= 1.0 for x in numbers(changed)) and "[" in changed


# -- references, legend, provenance --------------------------------------------------------------------


def write_references(directory):
    acc = {"random": {"1": 0.30, "2": 0.31}, "similarity": {"1": 0.40, "2": 0.42},
           "best_labelled": {"1": 0.50, "2": 0.55}, "oracle_greedy": {"1": 0.52, "2": 0.60}}
    oracle = {k: {"acc": v} for k, v in acc.items()}
    oracle["random"]["stderr"] = {"1": 0.0, "2": 0.0}
    offline = {"random": {"expected_reward": 0.8, "top1_reward": 0.8}, "similarity": {"top1_reward": 0.85}}
    entry = {"variants": list(PLANTED), "num_steps": 2, "splits": {
        "test": {"queries": 10, "offline": offline, "oracle": oracle},
        "val": {"queries": 10, "offline": offline, "oracle": oracle}}}
    with open(os.path.join(directory, "baselines.json"), "w") as f:
        json.dump({"sets": [entry]}, f)


def write_grid(directory):
    from leverjax.core import config as config_lib
    from leverjax.run import registry as experiments

    runs = []
    for variant, exp in (("rce_only", "rce_only"), ("better", "scheme5_6"), ("worse", "scheme5"), ("same", "scheme10")):
        cfg = config_lib.to_dict(experiments.get(exp).config)
        runs.append({"name": f"{variant}/seed=0", "variant": variant, "experiment": exp, "config": cfg,
                     "config_hash": "x"})
    prov = {"command": "python run.py --experiment=a,b", "cwd": "/x", "git": {"commit": "0123456789abcdef0", "dirty": True},
            "versions": {"leverjax": "0.1.0", "jax": "0.10.2"}, "devices": {"platform": "cpu", "kind": "cpu", "count": 1},
            "data": [{"path": "/data/x.npz", "sha256": "ab" * 32}], "date": "2026-01-01T00:00:00+00:00"}
    with open(os.path.join(directory, "grid.json"), "w") as f:
        json.dump({"runs": runs, "descriptions": {"scheme5_6": "scheme5 with GRPO lr 5e-5"}, "provenance": prov}, f)


def test_reference_rows_legend_definitions_and_provenance(tmp_path):
    write_planted(tmp_path)
    write_references(tmp_path)
    write_grid(tmp_path)
    text, _ = report.build_report(str(tmp_path), plots=False)
    ref = cells(text, "## The researchers' table", "random selection (from the pool)")
    assert ref[:4] == ["*random selection (from the pool)*", "ref", "30.00", "31.00"]
    assert cells(text, "## The researchers' table", "oracle greedy (ceiling)")[2:4] == ["52.00", "60.00"]
    offline = cells(text, "## Test metrics, final parameters", "similarity retrieval")
    assert "n/a" in offline  # no expected reward for a retrieval (not a policy over labelled trajectories)
    s = summary_of(text)
    assert "random selection (from the pool) 30.5%" in s and "oracle greedy (ceiling) 56.0%" in s and "55.0% at 2 shots" in s
    # the legend, in a researcher's words
    legend = cells(text, "## Runs", "better")
    assert legend[2] == "scheme5 with GRPO lr 5e-5"
    assert "GRPO lr 5e-5" in legend[3] and "z-score advantages" in legend[3] and "50 GRPO epochs" in legend[3]
    assert cells(text, "## Runs", "rce_only")[3] == "the baseline"
    assert "## What the metrics measure" in text and "labelled trajectories" in text
    prov = text[text.index("## Provenance"):]
    assert "`python run.py --experiment=a,b`" in prov and "`0123456789ab`" in prov and "dirty" in prov
    assert "ab" * 32 in prov and "jax 0.10.2" in prov and "2026-01-01" in prov


def test_describe_changes_names_what_a_run_changes():
    from leverjax.core import config as config_lib
    from leverjax.run import registry as experiments

    base = config_lib.to_dict(experiments.get("rce_only").config)
    words = report.describe_changes(config_lib.to_dict(experiments.get("scheme5_6_fixed").config), base)
    assert "GRPO lr 5e-5" in words and "z-score advantages" in words and "post-RCE reference policy" in words
    assert "no dropout in the ratio" in words and "no top-k curriculum" in words
    assert report.describe_changes(base, base) == []
    # Values that change no result are never named; a field without declared words keeps its own name.
    assert report.describe_changes({**base, "checkpoint_seconds": 5, "workdir": "x", "eval_chunk": 7}, base) == []
    assert report.describe_changes({**base, "beta_factor": 2.0}, base) == ["beta_factor = 2"]


# -- plots ------------------------------------------------------------------------------------------------


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_command_line_and_plots(tmp_path):
    pytest.importorskip("matplotlib")
    write_csv(tmp_path, failed_status=False)
    write_references(tmp_path)
    res = subprocess.run([sys.executable, "-m", "leverjax.report", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("wrote "), res.stderr
    text = (tmp_path / "report.md").read_text()
    pngs = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", text)
    assert pngs[0] == "plots/forest.png"  # the forest plot comes with the researchers' table
    assert "plots/overview_val_expected_reward.png" in pngs and "plots/overview_val_oracle_acc_mean.png" in pngs
    assert "plots/curves_scheme5.png" in pngs and "plots/curves_rce_only.png" in pngs
    for rel in pngs:
        data = (tmp_path / rel).read_bytes()
        width, height = png_size(data)
        assert width >= 600 and height >= 200 and len(data) > 5000, (rel, width, height)
    for args in ([str(tmp_path / "missing")], [str(tmp_path), "--baseline=nope"]):
        res = subprocess.run([sys.executable, "-m", "leverjax.report", *args], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_a_one_run_grid_overview_has_no_empty_delta_panel(tmp_path):
    pytest.importorskip("matplotlib")
    for name, variants in (("one", ("scheme5",)), ("two", ("rce_only", "scheme5"))):
        write_csv(tmp_path / name, failed_status=False, variants=variants)
        report.write_report(str(tmp_path / name))
    one, two = ((tmp_path / n / "plots" / "overview_val_expected_reward.png").read_bytes() for n in ("one", "two"))
    # one panel (8 in) for the baseline alone; value and Δ panels (14 in) when there is something to compare
    assert png_size(one)[0] < 0.7 * png_size(two)[0], (png_size(one), png_size(two))
    assert "and Δ to the baseline" not in (tmp_path / "one" / "report.md").read_text()
    assert "and Δ to the baseline" in (tmp_path / "two" / "report.md").read_text()


def test_overviews_are_drawn_only_with_grpo_epochs_and_name_a_band_only_with_two_seeds(tmp_path, monkeypatch):
    """A grid without GRPO gets no overview (its runs would be flat lines); one seed draws no band, so the
    overview's titles name none."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    titles = {}
    savefig = Figure.savefig

    def recording(fig, path, *args, **kwargs):
        titles[str(path)] = [ax.get_title() for ax in fig.axes]
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    for name, variants, seeds in (("none", ("rce_only",), SEEDS), ("one", ("rce_only", "scheme5"), (0,)),
                                  ("five", ("rce_only", "scheme5"), SEEDS)):
        write_csv(tmp_path / name, failed_status=False, variants=variants, seeds=seeds)
        report.write_report(str(tmp_path / name))
    assert not list((tmp_path / "none" / "plots").glob("overview_*"))
    assert "overview_" not in (tmp_path / "none" / "report.md").read_text()
    assert (tmp_path / "none" / "plots" / "curves_rce_only.png").is_file()  # its other figures stay
    for name, bands in (("one", False), ("five", True)):
        overview = titles[str(tmp_path / name / "plots" / "overview_val_expected_reward.png")]
        assert len(overview) == 2 and all(("band" in t) == bands for t in overview), (name, overview)


def test_a_stop_selectors_adaptive_accuracy_is_no_shot_count(tmp_path):
    pytest.importorskip("matplotlib")
    write_csv(tmp_path, failed_status=False, adaptive=True)
    write_references(tmp_path)
    report.write_report(str(tmp_path))  # with the plots
    assert load.oracle_shots(["val_oracle_acc_1", "val_oracle_acc_adaptive", "test_oracle_acc_2"]) == [1]
    run = load.load_runs(str(tmp_path / "metrics.csv"))["scheme5"][0]
    assert run.value(("grpo", 1), load.ORACLE_MEAN) == pytest.approx(0.41)  # acc@1 alone, not the adaptive 0.9


def test_real_data_report_uses_the_offline_metrics_that_apply(tmp_path):
    """No oracle accuracies: the headline is the expected reward, and the reference rows fill only the
    metrics that apply to them."""
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for variant, shift in (("rce_only", 0.0), ("scheme5_6", 0.05)):
            for seed in range(3):
                head = ("g01", variant, variant, seed)
                w.writerow((*head, "rce", 1, "val_expected_reward", 0.8 + 0.01 * seed, ""))
                w.writerow((*head, "final", "", "test_expected_reward", 0.8 + shift + 0.01 * seed, ""))
                w.writerow((*head, "final", "", "test_top1_reward", 0.9 + shift + 0.005 * seed, ""))
    write_references(tmp_path)
    refs = json.loads((tmp_path / "baselines.json").read_text())
    for split in refs["sets"][0]["splits"].values():
        del split["oracle"]
    (tmp_path / "baselines.json").write_text(json.dumps(refs))
    text, _ = report.build_report(str(tmp_path), plots=False)
    assert "## The researchers' table: expected reward" in text and "oracle" not in summary_of(text).lower()
    assert cells(text, "## The researchers' table", "random selection (from the pool)")[2:4] == ["0.800", "0.800"]
    assert cells(text, "## The researchers' table", "similarity retrieval")[2:4] == ["n/a", "0.850"]
    assert "- **scheme5_6** is **higher** than **rce_only** beyond its CI: +0.050" in summary_of(text)
    assert "a uniform random policy over the labelled trajectories has expected reward 0.800" in summary_of(text)


def test_summary_catches_a_val_reward_gain_with_an_accuracy_loss(tmp_path):
    """The case the report exists for: GRPO raises the validation expected reward while the accuracy falls
    (and the test expected reward does not move)."""
    os.makedirs(tmp_path, exist_ok=True)
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for seed in range(4):
            for variant, gain, loss in (("rce_only", 0.0, 0.0), ("grpo", 0.01 + 0.001 * seed, 0.02 + 0.002 * seed)):
                head = ("g01", variant, variant, seed)
                w.writerow((*head, "rce", 1, "val_expected_reward", 1.0 + 0.01 * seed, ""))
                w.writerow((*head, "rce", 1, "val_oracle_acc_1", 0.45, ""))
                if variant == "grpo":
                    for e in (1, 2):
                        w.writerow((*head, "grpo", e, "val_expected_reward", 1.0 + 0.01 * seed + gain * e / 2, ""))
                        w.writerow((*head, "grpo", e, "val_oracle_acc_1", 0.45 - 0.1 * loss * e / 2, ""))
                w.writerow((*head, "final", "", "test_oracle_acc_1", 0.45 - loss + 0.003 * (seed % 2), ""))
                w.writerow((*head, "final", "", "test_expected_reward", 0.9 + 0.01 * seed, ""))
    s = summary_of(report.build_report(str(tmp_path), plots=False)[0])
    assert "**grpo** is **lower** than **rce_only** beyond its CI" in s
    assert re.search(r"\*\*Offline metric and accuracy disagree\*\* for \*\*grpo\*\*: val expected reward after 2 GRPO "
                     r"epochs \+0\.01\d* \(95% CI \+0\.0\d* to \+0\.0\d*\), but test oracle accuracy -2\.\d+ pts", s), s


def test_the_data_section_names_each_data_sets_transform_and_what_it_left(tmp_path):
    """A grid on one untransformed data set has no Data section; a transformed one lists every data set."""
    def write(sets):
        with open(tmp_path / "baselines.json", "w") as f:
            json.dump({"sets": sets}, f)

    plain = {"data": "", "variants": ["rce_only"], "data_transform": "none", "data_queries": 0,
             "diagnosis": {"queries": 640, "trajectories": 8477, "positive_share": 0.548,
                           "zero_positive_share": 0.041, "flat_acc_share": 0.13}}
    write([plain])
    assert report._data_sets(str(tmp_path)) == []
    balanced = {**plain, "variants": ["rce_only[data_transform=balanced]"], "data_transform": "balanced",
                "data_queries": 100, "diagnosis": {"queries": 100, "trajectories": 1300, "positive_share": 0.5,
                                                   "zero_positive_share": 0.0, "flat_acc_share": None}}
    write([plain, balanced])
    text = "\n".join(report._data_sets(str(tmp_path)))
    assert text.startswith("## Data")
    assert "| `rce_only[data_transform=balanced]` | built-in synthetic set | balanced | 100 | 100 | 1300 | 0.500 | " \
           "0.000 | n/a |" in text
    assert "| `rce_only` | built-in synthetic set | none | all | 640 | 8477 | 0.548 | 0.041 | 0.130 |" in text
