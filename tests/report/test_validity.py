"""Metric validity on planted inputs: a metric equal to accuracy, its negation, an independent one."""
import csv
import json
import os

import numpy as np
import pytest

from leverjax.errors import ConfigError
from leverjax.report import load
from leverjax.report import markdown as report
from leverjax.report import validity

COLUMNS = ("group", "experiment", "variant", "seed", "phase", "epoch", "metric", "value", "overrides")


def _plant(directory, runs=12, epochs=10, seed=0, oracle=True):
    """A metrics.csv with ``runs`` seeds of two phases: val_loss = −accuracy (+ a tiny monotone noise-free
    transform), val_expected_reward = accuracy exactly, val_top1_reward independent of accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(runs):
        for phase in ("sft", "rce"):
            for e in range(1, epochs + 1):
                acc = rng.uniform(0.2, 0.6)
                values = {"val_loss": 3.0 - 2.0 * acc, "val_expected_reward": acc,
                          "val_top1_reward": rng.uniform(0, 1), "val_changed_vs_ref": rng.uniform(0, 1)}
                if oracle:
                    values.update({"val_oracle_acc_1": acc + 0.01, "val_oracle_acc_2": acc - 0.01})
                rows += [("g01", "rce_only", "rce_only", s, phase, e, k, repr(v), "") for k, v in values.items()]
        acc = rng.uniform(0.2, 0.6)
        final = {"test_loss": 3.0 - 2.0 * acc, "test_expected_reward": acc, "test_top1_reward": rng.uniform(0, 1),
                 "test_changed_vs_ref": rng.uniform(0, 1)}
        if oracle:
            final.update({"test_oracle_acc_1": acc, "test_oracle_acc_2": acc})
        rows += [("g01", "rce_only", "rce_only", s, "final", "", k, repr(v), "") for k, v in final.items()]
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    d = tmp_path_factory.mktemp("validity")
    _plant(str(d))
    return str(d), validity.metric_validity(load.grid_runs(str(d)), source=str(d), resamples=300)


def test_a_metric_equal_to_accuracy_correlates_fully(planted):
    _, res = planted
    e = res["per_epoch"]
    assert e["expected_reward"]["rho"] == pytest.approx(1.0)
    assert e["expected_reward"]["low"] == pytest.approx(1.0) and e["expected_reward"]["points"] == 12 * 20
    assert e["loss"]["rho"] == pytest.approx(-1.0) and e["loss"]["oriented_rho"] == pytest.approx(1.0)
    assert res["per_run"]["expected_reward"]["rho"] == pytest.approx(1.0)
    assert res["per_run"]["loss"]["rho"] == pytest.approx(-1.0)
    # selecting the best epoch by an exact proxy loses nothing
    assert res["best_epoch"]["expected_reward"]["loss_pts"] == pytest.approx(0.0, abs=1e-9)
    assert res["best_epoch"]["loss"]["hit_share"] == 1.0
    assert res["best_metric"] in ("val_loss", "val_expected_reward")


def test_an_independent_metric_correlates_near_zero(planted):
    _, res = planted
    for m in ("top1_reward", "changed_vs_ref"):
        e = res["per_epoch"][m]
        assert abs(e["rho"]) < 0.25 and e["low"] < 0 < e["high"]
    assert res["best_epoch"]["top1_reward"]["loss_pts"] > 3.0
    assert res["best_epoch"]["top1_reward"]["loss_pts"] > res["best_epoch"]["loss"]["loss_pts"]


def test_the_files_hold_the_printed_table(planted):
    d, _ = planted
    text, _ = report.metric_validity_files(d)
    assert "| expected_reward | max | +1.00" in text and "Best predictor" in text
    with open(os.path.join(d, "metric_validity.json")) as f:
        assert json.load(f)["per_epoch"]["loss"]["rho"] == pytest.approx(-1.0)
    with open(os.path.join(d, "metric_validity.md")) as f:
        assert f.read() == text


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        report.metric_validity_files(str(tmp_path / "nowhere"))
    _plant(str(tmp_path), runs=2, epochs=2, oracle=False)
    with pytest.raises(ConfigError, match="no oracle accuracy"):
        report.metric_validity_files(str(tmp_path))
