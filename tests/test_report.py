"""The grid report from a small hand-written metrics.csv: the numbers it prints are the means, 95% CIs
and paired differences of a reference formula written here without NumPy or SciPy."""
import csv
import json
import math
import os
import re
import sys

import pytest

from leverjax import report
from leverjax.launch import CSV_COLUMNS

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


def write_csv(directory, failed_status=True):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for g, variant in (("g01", "rce_only"), ("g02", "scheme5")):
            for i, seed in enumerate(SEEDS):
                head = (g, variant, variant, seed)
                vals = VAL[variant][i]
                w.writerow((*head, "sft", 1, "val_expected_reward", 0.5, ""))
                w.writerow((*head, "rce", 1, "val_expected_reward", vals[0], ""))
                w.writerow((*head, "rce", 1, "val_oracle_acc_1", 0.4, ""))
                for e, v in enumerate(vals[1:], 1):
                    w.writerow((*head, "grpo", e, "val_expected_reward", v, ""))
                    w.writerow((*head, "grpo", e, "train_kl", 0.01 * e, ""))
                    w.writerow((*head, "grpo", e, "val_oracle_acc_1", 0.4 + 0.01 * e, ""))
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
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", cell)]


def close(cell, mean, half, digits):
    got = numbers(cell)
    tol = 0.51 * 10 ** -digits
    assert len(got) == 2 and abs(got[0] - mean) <= tol and abs(got[1] - half) <= tol, (cell, mean, half)


def test_report_numbers_match_the_reference_formula(tmp_path):
    write_csv(tmp_path)
    path = report.write_report(str(tmp_path), plots=False)
    text = open(path).read()
    head = "## The researchers' table"
    base_row, row = cells(text, head, "rce_only"), cells(text, head, "scheme5")
    assert base_row[1] == row[1] == "5"
    for shot in range(1, 5):
        close(row[1 + shot], *reference_ci([100 * a for a in ACC["scheme5"][shot]]), 2)
        close(base_row[1 + shot], *reference_ci([100 * a for a in ACC["rce_only"][shot]]), 2)
        diffs = [100 * (a - b) for a, b in zip(ACC["scheme5"][shot], ACC["rce_only"][shot])]
        close(row[5 + shot], *reference_ci(diffs), 2)
        assert row[5 + shot].startswith(("+", "-"))
    mean_diffs = [100 * sum(ACC["scheme5"][s][i] - ACC["rce_only"][s][i] for s in range(1, 5)) / 4 for i in range(5)]
    close(row[10], *reference_ci(mean_diffs), 2)
    # acc@1: the difference's CI excludes 0 and is starred; the baseline's own Δ cells are dashes.
    m, h = reference_ci([100 * (a - b) for a, b in zip(ACC["scheme5"][1], ACC["rce_only"][1])])
    assert abs(m) > h and row[6].endswith("*")
    assert base_row[6:] == ["—"] * 5
    assert "**rce_only**" in text  # the default baseline


def test_equal_epoch_comparison_pairs_seeds_and_holds_a_shorter_baseline(tmp_path):
    write_csv(tmp_path)
    text, _ = report.build_report(str(tmp_path), plots=False)
    head = "### val expected reward"
    table = text[text.index(head):]
    header = next(line for line in table.splitlines() if line.startswith("| run"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["run", "before GRPO", "GRPO 1", "GRPO 2"]
    row = cells(text, head, "scheme5")
    close(row[2], *reference_ci([v[1] for v in VAL["scheme5"]]), 4)
    base_row = cells(text, head, "rce_only")
    close(base_row[1], *reference_ci([v[0] for v in VAL["rce_only"]]), 4)
    assert base_row[2] == ""  # no GRPO epoch 1
    delta = cells(text, "Δ to **rce_only**", "scheme5")
    # GRPO epoch 2 against the baseline held at its last (pre-GRPO) value, seed by seed.
    close(delta[3], *reference_ci([a[2] - b[0] for a, b in zip(VAL["scheme5"], VAL["rce_only"])]), 4)
    close(delta[1], 0.0, 0.0, 4)


def test_final_tables_failed_runs_and_another_baseline(tmp_path):
    write_csv(tmp_path)
    text, _ = report.build_report(str(tmp_path), baseline="scheme5", plots=False)
    assert "baseline **scheme5**" in text
    row = cells(text, "## The researchers' table", "rce_only")
    diffs = [100 * (b - a) for a, b in zip(ACC["scheme5"][1], ACC["rce_only"][1])]
    close(row[6], *reference_ci(diffs), 2)
    best = cells(text, "best-epoch parameters", "scheme5")
    close(best[2], *reference_ci([100 * a for a in ACC["scheme5"][1]]), 2)
    failed = cells(text, "## Failed runs", "scheme7")
    assert failed[2] == "diverged" and "train_loss is nan" in failed[3]
    with pytest.raises(ValueError, match="not a run of this grid"):
        report.build_report(str(tmp_path), baseline="nope", plots=False)


def test_command_line_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    write_csv(tmp_path, failed_status=False)
    assert report.main([str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    pngs = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", text)
    assert "plots/overview_val_expected_reward.png" in pngs
    assert "plots/curves_scheme5.png" in pngs and "plots/curves_rce_only.png" in pngs
    for rel in pngs:
        data = (tmp_path / rel).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert report.main([str(tmp_path / "missing")]) == 2
    assert report.main([str(tmp_path), "--baseline=nope"]) == 2
    assert "not a run of this grid" in capsys.readouterr().err


def test_tables_are_written_without_matplotlib(tmp_path, monkeypatch):
    write_csv(tmp_path, failed_status=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    text, written = report.build_report(str(tmp_path))
    assert written == [] and "matplotlib is not installed" in text
    assert "## The researchers' table" in text
