"""run.py as a user meets it: errors are one line with exit code 2, and a tiny run writes its outputs
and resumes instead of retraining."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from leverjax.data import save_npz, synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_py(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["--experiment=nope"], "unknown experiment 'nope'; valid: rce_only, current"),
    (["--bogus=1"], "Unknown command line flag 'bogus'"),
    (["--grpo_lr=abc"], "could not convert string to float"),
    (["--advantage=foo"], "advantage='foo' is not one of: zscore, rank, mean, rloo, none"),
    (["--sweep=nope=8,16"], "unknown config field 'nope'"),
    (["--data=/nonexistent/file.npz"], "/nonexistent/file.npz"),
])
def test_bad_input_is_one_clear_line_and_exit_code_2(args, message):
    proc = run_py(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_list_experiments_names_every_experiment():
    from leverjax.run import registry as experiments
    proc = run_py("--list_experiments")
    assert proc.returncode == 0
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert listed == list(experiments.NAMES) + list(experiments.COLLECTIONS)
    assert "schemes            (collection) rce_only ... scheme5_6_fixed: 17 experiments" in proc.stdout


def test_tiny_run_writes_outputs_and_a_rerun_resumes(finished_run, tmp_path):
    args, out = finished_run["args"], finished_run["out"]
    assert f"== grpo: {GRPO_EPOCHS} epochs" in finished_run["stdout"]
    assert "final evaluation on test" in finished_run["stdout"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 * (1 + 1 + GRPO_EPOCHS)  # two seeds × the epochs of three phases
    assert {r["seed"] for r in records} == {0, 1}
    summary = json.loads((out / "summary.json").read_text())
    mean, ci = summary["summary"]["scheme5_6"]["test_oracle_acc_2"]
    assert 0.0 < mean < 1.0 and ci > 0.0
    (group,) = (out / "runs").iterdir()
    assert (group / "best").is_dir() and (group / "config.json").is_file() and (out / "grid.json").is_file()
    assert (out / "metrics.csv").is_file() and (out / "report.md").is_file()

    again = run_py(*args)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 runs already finished there" in again.stdout and "== grpo" not in again.stdout
    assert json.loads((out / "summary.json").read_text())["final"] == summary["final"]

    # The same experiment through an explicit results directory (the grid path) writes the same files.
    grid_out = tmp_path / "grid"
    proc = run_py(*args, f"--out={grid_out}")
    assert proc.returncode == 0, proc.stderr
    for name in ("metrics.csv", "metrics.jsonl", "summary.json"):
        assert (grid_out / name).read_text() == (out / name).read_text(), name
    def report(folder):  # the same report up to its provenance (command line, date) and the folder's name
        text = (folder / "report.md").read_text().split("## Provenance")[0]
        text = text.replace(str(folder), "DIR").replace(f"`{folder.name}`", "DIR")
        return [line for line in text.splitlines() if "Generated" not in line and "Regenerate" not in line]

    assert report(grid_out) == report(out)
    assert sorted(p.name for p in (grid_out / "plots").iterdir()) == sorted(p.name for p in (out / "plots").iterdir())

    # Tools take the results directory and a run index in the grid's order.
    from leverjax.run import checkpoint
    from leverjax.tools import interop
    folder, index = checkpoint.resolve_params_folder(str(out), 1)
    assert (folder, index) == (str(group / "best"), 1)
    params, _ = interop.load_checkpoint(str(out), run_index=1)
    direct, _ = interop.load_checkpoint(str(group / "best"), run_index=1)
    import jax
    import numpy as np
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, direct)
    with pytest.raises(Exception, match=r"--run=2: .* has 2 finished run\(s\) \(0: scheme5_6/seed=0; 1: scheme5_6/seed=1\)"):
        checkpoint.resolve_params_folder(str(out), 2)


def test_ctrl_c_is_one_line_and_leaves_no_worker_behind(tmp_path):
    """Ctrl-C during a two-group grid trained by two workers: exit code 130, one line, no traceback, and the
    worker processes end with the launcher."""
    data = tmp_path / "tiny.npz"
    save_npz(synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6,
                                  dim=16), str(data))
    # A shell's background job starts with SIGINT ignored, and Python keeps it so: the child restores it.
    restore = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    # Its own session (process group), which the workers join: killed whole at the end, whatever failed.
    proc = subprocess.Popen([sys.executable, "-c", restore, os.path.join(ROOT, "run.py"), f"--data={data}",
                             "--experiment=scheme5,scheme3", "--hidden=16", "--sft_epochs=1", "--rce_epochs=1",
                             "--grpo_epochs=500", "--grpo_batch_size=8", "--workers=2", f"--out={tmp_path / 'g'}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "g").glob("runs/*/metrics.jsonl")):  # a worker is training
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no group started training in 300 s"
            time.sleep(0.2)
        workers = _workers_of(proc.pid)
        assert workers
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted: finished runs and the last checkpoints are kept" in err and "Traceback" not in err
        time.sleep(1)
        assert not _workers_of(proc.pid) and not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs the process group of ``proc`` (started with ``start_new_session=True``: it and its workers)
    and reaps ``proc``."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended
    proc.wait(timeout=60)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _workers_of(parent: int) -> list[str]:
    """The leverjax worker processes whose parent is ``parent`` (from /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline") as f:
                cmdline = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "leverjax.run.workers" in cmdline:
            found.append(pid)
    return found


# -- SIGKILL: the same command again ends with the numbers of an uninterrupted run ---------------------------
# Tiny runs whose GRPO phase is long enough (~30 ms an epoch) to be killed in the middle of it. At the default
# --checkpoint_seconds (30) such a run is checkpointed only at each phase's last epoch, so the re-run trains
# GRPO again from the end of RCE: its metrics.csv must still be byte-equal to an uninterrupted run's.
GRPO_EPOCHS = 60
KILL_FLAGS = ["--hidden=16", "--sft_epochs=1", "--rce_epochs=1", f"--grpo_epochs={GRPO_EPOCHS}", "--grpo_batch_size=8",
              "--eval_shots=2"]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_npz(synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6,
                                  dim=16), str(path))
    return path


def finished_args(data, workdir) -> list[str]:
    """The command line of the tiny two-seed run that the output and the kill tests share."""
    return [f"--data={data}", f"--workdir={workdir}", "--experiment=scheme5_6", "--seeds=2", *KILL_FLAGS]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_npz):
    """That run, uninterrupted: its command line, results directory and printed output."""
    workdir = tmp_path_factory.mktemp("finished")
    args = finished_args(tiny_npz, workdir / "ck")
    proc = run_py(*args, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"args": args, "out": workdir / "ck" / "scheme5_6", "stdout": proc.stdout}


def _grpo_epochs_logged(path) -> int:
    """GRPO records in a run's metrics.jsonl (a last line torn by a kill is not counted)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith("}") and '"phase": "grpo"' in line)


def _start(args, cwd):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_until(proc, ready, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"run.py ended (exit code {proc.returncode}) before {what}:\n{proc.stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f"not {what} in {seconds} s"
        time.sleep(0.02)


def test_sigkill_mid_grpo_then_the_same_command_gives_the_uninterrupted_metrics(tmp_path, tiny_npz, finished_run):
    """run.py SIGKILLed in the middle of GRPO at the default --checkpoint_seconds, then started again with
    the same command: its metrics.csv is byte-equal to an uninterrupted run's."""
    args = finished_args(tiny_npz, tmp_path / "killed")
    out = tmp_path / "killed" / "scheme5_6"
    proc = _start(args, tmp_path)
    try:
        _wait_until(proc, lambda: any(_grpo_epochs_logged(p) for p in out.glob("runs/*/metrics.jsonl")),
                    "a GRPO epoch was logged")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    (jsonl,) = out.glob("runs/*/metrics.jsonl")
    # killed mid-GRPO (both seeds train in one program: a GRPO epoch logs a line per seed)
    assert 0 < _grpo_epochs_logged(jsonl) < 2 * GRPO_EPOCHS and not (out / "metrics.csv").exists()

    again = run_py(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout and "after rce epoch 1" in again.stdout, again.stdout[-3000:]
    assert (out / "metrics.csv").read_bytes() == (finished_run["out"] / "metrics.csv").read_bytes()


def test_a_sigkilled_worker_then_the_same_command_gives_the_uninterrupted_metrics(tmp_path, tiny_npz, finished_run):
    """A grid of two groups (hidden 16 and 8) on two workers; the worker of the hidden=16 group SIGKILLed in the
    middle of GRPO (the group's status names its pid): its group fails, the other finishes; the same command
    again trains the lost group from its checkpoint, to the numbers of the uninterrupted finished run (the same
    config and seeds; its records equal value for value but for the run's name and variant label)."""
    args = [f"--data={tiny_npz}", f"--out={tmp_path / 'g'}", "--experiment=scheme5_6", "--sweep=hidden=16,8",
            "--workers=2", "--seeds=2", *KILL_FLAGS[1:]]
    out = tmp_path / "g"
    killed = "scheme5_6[hidden=16]"

    def training_in_grpo() -> int | None:
        """The pid training the hidden=16 group once it has logged a GRPO epoch but not its last (a line per
        seed and epoch)."""
        try:
            grid = json.loads((out / "grid.json").read_text())
        except (OSError, ValueError):  # not written yet
            return None
        group = next(g["id"] for g in grid["groups"] if f"{killed}/seed=0" in g["runs"])
        for status in out.glob("status/*.json"):
            try:
                st = json.loads(status.read_text())
            except ValueError:  # being replaced
                continue
            if st.get("state") == "running" and st.get("group") == group:
                if 0 < _grpo_epochs_logged(out / st["directory"] / "metrics.jsonl") < 2 * GRPO_EPOCHS:
                    return st["pid"]
        return None

    proc = _start(args, tmp_path)
    try:
        _wait_until(proc, lambda: training_in_grpo() is not None, "the hidden=16 group was in the middle of GRPO")
        pid = training_in_grpo()
        assert str(pid) in _workers_of(proc.pid), (pid, _workers_of(proc.pid))
        os.kill(pid, signal.SIGKILL)
        first, _ = proc.communicate(timeout=240)
    finally:
        kill_group(proc)
    assert "failed: its worker process died (exit code -9)" in first, first[-3000:]
    logged = sorted(_grpo_epochs_logged(p) for p in out.glob("runs/*/metrics.jsonl"))
    assert 0 < logged[0] < 2 * GRPO_EPOCHS == logged[1], logged  # the other group finished

    again = run_py(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 of 4 runs already finished there" in again.stdout and "resuming" in again.stdout, again.stdout[-3000:]

    def records(folder, variant):
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        return [json.dumps({k: v for k, v in r.items() if k not in ("run", "variant")}) for r in rows
                if r["variant"] == variant]

    resumed = records(out, killed)
    assert len(resumed) == 2 * (1 + 1 + GRPO_EPOCHS)
    assert resumed == records(finished_run["out"], "scheme5_6")
