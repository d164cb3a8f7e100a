"""Data without a test split (what the importer writes by default): the final evaluation falls back to val
and says so, nothing is printed as a row of NaN, and every JSON file written is strict JSON."""
import dataclasses
import json
import math

import numpy as np
import pytest

from leverjax.core import config as config_lib
from leverjax.core import stats
from leverjax.core.evaluate import Evaluator
from leverjax.core.train import Pipeline
from leverjax.data import synth
from leverjax.fileio import dumps_strict
from leverjax.run import console
from leverjax.run import grid as grid_lib
from leverjax.run import launch, results


def strict_load(text: str):
    def reject(token):
        raise ValueError(f"bare {token} in JSON")
    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def no_test_split():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=60, num_test_queries=0, pool_size=8,
                                max_trajectories=6, dim=16)


def test_run_without_test_split_evaluates_on_val_with_strict_json(no_test_split, tmp_path):
    overrides = dict(hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=1, sft_batch_size=16, rce_batch_size=8,
                     grpo_batch_size=8, eval_chunk=64, eval_shots=3)
    lines = []
    out = tmp_path / "imported"
    result = launch.run_grid(["scheme5_6"], overrides, seeds=1, out=str(out), dataset=no_test_split,
                             printer=lines.append, report=False)
    text = "\n".join(lines)
    assert result.final_split == "val"
    assert "== final evaluation on val" in text and "the data has no test queries" in text
    summary_lines = text.split("== final evaluation on val")[1].splitlines()[2:]
    assert summary_lines and not any("nan" in line for line in summary_lines), text

    summary = strict_load((out / "summary.json").read_text())
    assert summary["final_split"] == "val" and "no test queries" in summary["final_split_reason"]
    assert math.isfinite(summary["final"][0]["test_loss"])
    # one seed: no confidence interval; the half widths are null and the reason is written beside them
    assert summary["summary"]["scheme5_6"]["test_loss"][1] is None and "one seed" in summary["undefined"]["summary_ci"]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        strict_load(line)
    (group,) = (out / "runs").iterdir()
    for path in (out / "grid.json", group / "config.json", group / "results.json", *(out / "status").iterdir()):
        strict_load(path.read_text())


def test_no_val_or_test_split_and_undefined_values():
    ds = synth.make_synthetic(seed=0, num_examples=120, num_queries=20, num_test_queries=0, pool_size=8,
                              max_trajectories=4, min_trajectories=2, dim=8)
    only_train = dataclasses.replace(ds, split=np.zeros_like(ds.split))
    cfg = config_lib.replace(config_lib.Config(), dict(hidden=8, sft_epochs=1, rce_epochs=0, grpo_epochs=0))
    assert Evaluator(Pipeline(cfg, only_train)).final_split is None
    assert Evaluator(Pipeline(cfg, ds)).final_split == "val"
    final = [{"run": "seed=0", "variant": "-", "seed": 0, "test_loss": math.nan,
              "test_greedy_labelled_reward": math.nan}]
    summary = stats.summarize(final, "variant")
    lines = []
    grid = grid_lib.expand_grid(["rce_only"], seeds=1)
    console.print_summary(results.GridResult("out", grid, {}, [], "", None, 1.0, summary, None), lines.append)
    assert "\n== the data has no test or val queries: there is no final evaluation" in lines
    assert not any("test_loss" in line for line in lines)
    record = results.undefined_record(final, summary)["undefined"]
    assert "labelled trajectory" in record["test_greedy_labelled_reward"] and "test_loss" in record
    out = strict_load(dumps_strict({"final": final, "summary": summary, "inf": [np.float32(np.inf), -math.inf]}))
    assert out["final"][0]["test_loss"] is None and out["inf"] == [None, None]
