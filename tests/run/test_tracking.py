"""TensorBoard event files written per epoch and read back with the record format's checks, the rewrite of a
run whose epochs were partly restored, and W&B logging (a recording stand-in, and wandb's offline mode
when wandb is installed)."""
import glob
import math
import os
import sys
import types

import pytest

from leverjax.errors import ConfigError
from leverjax.run import tracking

HISTORY = [
    {"phase": "sft", "epoch": 1, "train_loss": 3.0, "val_expected_reward": 0.5},
    {"phase": "rce", "epoch": 1, "train_loss": 2.0, "val_expected_reward": 0.7, "val_greedy_labelled_reward": math.nan},
    {"phase": "grpo", "epoch": 1, "train_loss": 0.1, "train_kl": 0.02, "val_expected_reward": 0.75},
]
FINAL = {"test_expected_reward": 0.8, "test_oracle_acc_1": 0.45, "test_greedy_labelled_reward": math.nan}


def test_event_files_hold_every_epoch_tagged_by_phase(tmp_path):
    tb = tracking.TensorBoardLogs(str(tmp_path))
    for step, rec in enumerate(HISTORY, 1):  # as the launcher does while training
        tb.epoch("scheme5_6[kl_beta=0.05]/seed=3", step, rec["phase"], rec)
    tb.finish("scheme5_6[kl_beta=0.05]/seed=3", HISTORY, FINAL)
    directory = tmp_path / "tb" / "scheme5_6[kl_beta=0.05]" / "seed=3"
    assert len([f for f in os.listdir(directory) if f.startswith("events.out.tfevents")]) == 1  # not rewritten
    got = tracking.read_scalars(str(directory))
    assert got["sft/train_loss"] == [(1, 3.0)]
    assert got["rce/val_expected_reward"] == [(2, pytest.approx(0.7))]
    assert got["grpo/train_kl"] == [(3, pytest.approx(0.02))]
    assert got["final/test_oracle_acc_1"] == [(3, pytest.approx(0.45))]
    assert "rce/val_greedy_labelled_reward" not in got and "final/test_greedy_labelled_reward" not in got  # NaN
    assert set(got) == {"sft/train_loss", "sft/val_expected_reward", "rce/train_loss", "rce/val_expected_reward",
                        "grpo/train_loss", "grpo/train_kl", "grpo/val_expected_reward", "final/test_expected_reward",
                        "final/test_oracle_acc_1"}


def test_a_partly_logged_run_is_rewritten_from_its_history(tmp_path):
    tb = tracking.TensorBoardLogs(str(tmp_path))
    # a resumed group: this process trained only the GRPO epoch (step 3); SFT and RCE came from a checkpoint
    tb.epoch("rce_only/seed=0", 3, "grpo", HISTORY[2])
    tb.finish("rce_only/seed=0", HISTORY, FINAL)
    got = tracking.read_scalars(tb.directory("rce_only/seed=0"))
    assert got["grpo/train_loss"] == [(3, pytest.approx(0.1))]  # once, not twice
    assert got["sft/train_loss"] == [(1, 3.0)] and got["rce/train_loss"] == [(2, 2.0)]
    assert tb.has_events("rce_only/seed=0") and not tb.has_events("other/seed=0")


def test_the_reader_checks_the_records(tmp_path):
    tb = tracking.TensorBoardLogs(str(tmp_path))
    tb.finish("a/seed=0", HISTORY, FINAL)
    path = glob.glob(os.path.join(glob.escape(tb.directory("a/seed=0")), "events.out.tfevents*"))[0]
    data = bytearray(open(path, "rb").read())
    data[-6] ^= 0xFF  # a flipped byte in the last record's payload
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="corrupt record"):
        tracking.read_scalars(tb.directory("a/seed=0"))


class _FakeRun:
    def __init__(self, calls, kwargs):
        self.calls, self.kwargs, self.logged, self.summary = calls, kwargs, [], {}

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self, exit_code=0):
        self.calls.append(("finish", self.kwargs["name"], exit_code, self.logged, dict(self.summary)))


def test_wandb_runs_get_every_epoch_the_config_and_the_final_metrics(monkeypatch, tmp_path):
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw)) or _FakeRun(calls, kw)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    logs = tracking.WandbLogs("lever", str(tmp_path))
    logs.log_run("scheme5/seed=1", "scheme5", HISTORY, FINAL, {"grpo_lr": 5e-6})
    logs.log_run("scheme7/seed=1", "scheme7", HISTORY[:2], None, {}, failure={"reason": "train_loss is nan"})
    init = calls[0][1]
    assert (init["project"], init["name"], init["group"], init["config"]) == ("lever", "scheme5/seed=1", "scheme5",
                                                                          {"grpo_lr": 5e-6})
    _, name, code, logged, summary = calls[1]
    assert code == 0 and [s for s, _ in logged] == [1, 2, 3]
    assert logged[2][1] == {"grpo/train_loss": 0.1, "grpo/train_kl": 0.02, "grpo/val_expected_reward": 0.75}
    assert summary == {"final/test_expected_reward": 0.8, "final/test_oracle_acc_1": 0.45}
    assert calls[3][2] == 1 and calls[3][4] == {"failure": "train_loss is nan"}  # a failed run ends as failed


def test_wandb_project_without_wandb_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match="needs the wandb package"):
        tracking.WandbLogs("lever", str(tmp_path))


def test_wandb_offline_mode_writes_the_run(monkeypatch, tmp_path):
    wandb = pytest.importorskip("wandb", reason="wandb is optional (pip install wandb)")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    tracking.WandbLogs("leverjax-test", str(tmp_path)).log_run("rce_only/seed=0", "rce_only", HISTORY, FINAL,
                                                               {"rce_lr": 1e-4})
    wandb.teardown()  # the W&B service closes its files
    files = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1
    data = open(files[0], "rb").read()
    assert b"rce_only/seed=0" in data and b"grpo/val_expected_reward" in data and b"final/test_oracle_acc_1" in data
