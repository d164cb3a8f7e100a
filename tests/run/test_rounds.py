"""The data loop end to end on a tiny simulator: the generate command on a trained results directory (its
candidates, methods and oracle labels), its one-line errors, and a two-round experiment that resumes after a
kill between its rounds."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from leverjax.data import candidates as cand_lib
from leverjax.data import synth
from leverjax.data.npz import load_npz, save_npz
from leverjax.errors import ConfigError, DataError
from leverjax.report.rounds import write_rounds_report
from leverjax.run import launch, rounds
from leverjax.tools import generate as generate_cmd

TINY = dict(hidden=16, sft_epochs=2, rce_epochs=2, grpo_epochs=0, sft_batch_size=16, rce_batch_size=8,
            eval_chunk=64, eval_shots=2)
SYNTH = dict(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6, dim=16)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "tiny.npz")
    save_npz(synth.make_synthetic(**SYNTH), path)
    return path


@pytest.fixture(scope="module")
def trained(data_file, tmp_path_factory):
    """A results directory of rce_only (2 seeds) on the tiny data."""
    out = str(tmp_path_factory.mktemp("trained"))
    launch.run_grid(["rce_only"], {**TINY, "data": data_file}, seeds=2, out=out, tables=False, workers=1,
                    printer=lambda s: None)
    return out


def test_generate_gives_valid_data_with_the_mix_and_the_oracles_labels(trained, data_file, tmp_path):
    out = str(tmp_path / "gen.npz")
    summary = generate_cmd.generate(generate_cmd.Options(checkpoint=trained, run=1, out=out, scorer="oracle"))
    ds, src = load_npz(out), load_npz(data_file)
    train = src.split_index("train")
    mix = cand_lib.parse_mix(cand_lib.ORIGINAL_MIX)
    # every candidate carries its method; per query each method has at most its count, and what the
    # de-duplication removed is accounted for
    names = list(ds.gen_methods)
    assert names[:4] == list(cand_lib.METHODS)
    counts = mix.counts()
    for r in train:
        m = ds.traj_mask[r]
        methods = [names[c] for c in ds.gen_method[r][m]]
        for name, n in counts.items():
            assert methods.count(name) <= n
        sets = {tuple(sorted(t)) for t in ds.traj[r][m].tolist()}
        assert len(sets) == m.sum()  # de-duplicated
        beams = ds.gen_rank[r][m][np.array(methods) == "beam"]
        assert len(beams) and 0 in beams.tolist()  # the selector's best beam is never dropped
    assert summary["proposed"] == {k: n * len(train) for k, n in counts.items()}
    assert sum(summary["kept"].values()) == int(ds.traj_mask[train].sum()) == summary["prompts"]
    # the labels are the oracle's expected accuracy of each candidate (prompt order = trajectory order)
    rows = np.repeat(train, ds.traj_mask[train].sum(1))
    demo = np.stack([ds.pool_ids[r, t] for r in train for t in ds.traj[r][ds.traj_mask[r]]])
    want = synth.oracle_accuracy_np(src.oracle, src.query_ids[rows], demo)
    np.testing.assert_allclose(ds.acc[train][ds.traj_mask[train]], want, rtol=1e-6, atol=1e-7)
    # the other splits are untouched
    for split in ("val", "test"):
        idx = src.split_index(split)
        np.testing.assert_array_equal(ds.traj[idx][:, :src.max_trajectories], src.traj[idx])
    assert os.path.isfile(str(tmp_path / "gen.generate.json"))


def test_generate_refuses_bad_input_with_one_clear_line(trained, tmp_path):
    opts = generate_cmd.Options(checkpoint=trained, out=str(tmp_path / "x.npz"))
    with pytest.raises(ConfigError, match="asks for no candidate"):
        generate_cmd.generate(generate_cmd.Options(**{**opts.__dict__, "mix": "beam=0"}))
    other = str(tmp_path / "k10.npz")
    save_npz(synth.make_synthetic(**{**SYNTH, "pool_size": 10}), other)
    with pytest.raises(DataError, match="trained on pools of K=8 candidates but .* has K=10"):
        generate_cmd.generate(generate_cmd.Options(**{**opts.__dict__, "data": other}))
    with pytest.raises(ConfigError, match="--scorer=none writes the unlabelled candidates"):
        generate_cmd.generate(generate_cmd.Options(**{**opts.__dict__, "scorer": "none"}))


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_two_rounds_resume_after_a_kill_between_rounds(data_file, tmp_path):
    out = str(tmp_path / "loop")
    overrides = {**TINY, "data": data_file, "rounds": 2, "round_data": "merge"}

    def killed(r):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rounds.run_rounds(["rce_only"], overrides, seeds=2, out=out, printer=lambda s: None, between_rounds=killed,
                          workers=1)
    data = [os.path.join(out, "round2", "data", "rce_only", f"seed={s}.npz") for s in (0, 1)]
    assert all(os.path.isfile(p) for p in data) and not os.path.exists(os.path.join(out, "round2", "rce_only"))
    before = [_sha(p) for p in data]
    # both seeds' data have M = the data's own plus the mix's 15 candidates: one shape, one compiled program
    assert [load_npz(p).max_trajectories for p in data] == [SYNTH["max_trajectories"] + 15] * 2
    lines = []
    summary = rounds.run_rounds(["rce_only"], overrides, seeds=2, out=out, printer=lines.append, workers=1)
    assert any("2 of 2 runs already finished" in line for line in lines)  # round 1 is not trained again
    assert [_sha(p) for p in data] == before  # the generated data is reused
    assert sorted((r["round"], r["seed"]) for r in summary["runs"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in summary["runs"]:
        assert r["final"]["test_oracle_acc_1"] is not None
        assert (r["scorer_calls"] > 0) == (r["round"] == 2)
    # round 2 trains on round 1's data merged with the candidates round 1's selector generated
    src, new = load_npz(data_file), load_npz(data[0])
    train = src.split_index("train")
    assert (new.group_sizes[train] > src.group_sizes[train]).all()
    np.testing.assert_array_equal(new.traj[train][:, :src.max_trajectories][src.traj_mask[train]],
                                  src.traj[train][src.traj_mask[train]])
    # a third call finds everything done and writes the same summary
    again = rounds.run_rounds(["rce_only"], overrides, seeds=2, out=out, printer=lambda s: None, workers=1)
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)
    text = open(write_rounds_report(out)).read()
    assert "| 2 | 2 |" in text and "Δ vs round 1" in text
