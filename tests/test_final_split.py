"""Data without a test split (what the importer writes by default): the final evaluation falls back to val
and says so, nothing is printed as a row of NaN, and every JSON file written is strict JSON."""
import dataclasses
import json
import math

import numpy as np
import pytest

import experiments
from leverjax import config as config_lib
from leverjax.data import synth
from leverjax.jsonio import dumps_strict
from leverjax.runner import Results, Runner, expand_runs, print_summary, summarize, undefined_record
from leverjax.train import Pipeline


def strict_load(text: str):
    def reject(token):
        raise ValueError(f"bare {token} in JSON")
    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def no_test_split():
    return synth.make_synthetic(seed=0, num_examples=300, num_queries=60, num_test_queries=0, pool_size=8,
                                max_trajectories=6, dim=16)


def test_run_without_test_split_evaluates_on_val_with_strict_json(no_test_split, tmp_path):
    cfg = config_lib.replace(experiments.get("scheme5_6").config, dict(
        hidden=16, sft_epochs=1, rce_epochs=1, grpo_epochs=1, sft_batch_size=16, rce_batch_size=8,
        grpo_batch_size=8, eval_chunk=64, eval_shots=3))
    lines = []
    results = Runner(cfg, no_test_split, expand_runs({}, 0, 1), name="imported", workdir=str(tmp_path),
                     out=lines.append).run()
    print_summary(results, out=lines.append)
    text = "\n".join(lines)
    assert results.final_split == "val"
    assert "== final evaluation on val" in text and "the data has no test queries" in text
    summary_lines = text.split("== final evaluation on val")[1].splitlines()[2:]
    assert summary_lines and not any("nan" in line for line in summary_lines), text
    assert math.isfinite(results.final[0]["test_loss"])

    directory = tmp_path / "imported"
    summary = strict_load((directory / "summary.json").read_text())
    assert summary["final_split"] == "val" and "no test queries" in summary["final_split_reason"]
    assert summary["final"][0]["test_loss"] == pytest.approx(results.final[0]["test_loss"])
    # one seed: no confidence interval; the half widths are null and the reason is written beside them
    assert summary["summary"]["-"]["test_loss"][1] is None and "one seed" in summary["undefined"]["summary_ci"]
    for line in (directory / "metrics.jsonl").read_text().splitlines():
        strict_load(line)
    strict_load((directory / "config.json").read_text())


def test_no_val_or_test_split_and_undefined_values():
    ds = synth.make_synthetic(seed=0, num_examples=120, num_queries=20, num_test_queries=0, pool_size=8,
                              max_trajectories=4, min_trajectories=2, dim=8)
    only_train = dataclasses.replace(ds, split=np.zeros_like(ds.split))
    cfg = config_lib.replace(config_lib.Config(), dict(hidden=8, sft_epochs=1, rce_epochs=0, grpo_epochs=0))
    assert Pipeline(cfg, only_train).final_split is None and Pipeline(cfg, ds).final_split == "val"
    final = [{"run": "seed=0", "group": "-", "seed": 0, "test_loss": math.nan, "test_greedy_labelled_reward": math.nan}]
    summary = summarize(final)
    lines = []
    print_summary(Results([None], [], final, summary, None, None, final_split=None), out=lines.append)
    assert lines == ["\n== the data has no test or val queries: there is no final evaluation"]
    record = undefined_record(final, summary)["undefined"]
    assert "labelled trajectory" in record["test_greedy_labelled_reward"] and "test_loss" in record
    out = strict_load(dumps_strict({"final": final, "summary": summary, "inf": [np.float32(np.inf), -math.inf]}))
    assert out["final"][0]["test_loss"] is None and out["inf"] == [None, None]
