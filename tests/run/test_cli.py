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
    assert listed == list(experiments.NAMES) + ["all", "schemes"]
    assert "schemes            (collection) rce_only ... scheme5_6_fixed: 17 experiments" in proc.stdout


def test_tiny_run_writes_outputs_and_a_rerun_resumes(tmp_path):
    data = tmp_path / "tiny.npz"
    save_npz(synth.make_synthetic(seed=0, num_examples=300, num_queries=60, pool_size=8, max_trajectories=6,
                                  dim=16), str(data))
    args = [f"--data={data}", f"--workdir={tmp_path / 'ck'}", "--experiment=scheme5_6", "--hidden=16",
            "--sft_epochs=1", "--rce_epochs=1", "--grpo_epochs=2", "--seeds=2", "--eval_shots=2"]
    proc = run_py(*args)
    assert proc.returncode == 0, proc.stderr
    assert "== grpo: 2 epochs" in proc.stdout and "final evaluation on test" in proc.stdout
    out = tmp_path / "ck" / "scheme5_6"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 * (1 + 1 + 2)  # two seeds × four epochs
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
    proc = subprocess.Popen([sys.executable, "-c", restore, os.path.join(ROOT, "run.py"), f"--data={data}",
                             "--experiment=scheme5,scheme3", "--hidden=16", "--sft_epochs=1", "--rce_epochs=1",
                             "--grpo_epochs=500", "--grpo_batch_size=8", "--workers=2", f"--out={tmp_path / 'g'}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "g").glob("runs/*/metrics.jsonl")):  # a worker is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    workers = _workers_of(proc.pid)
    assert workers
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: finished runs and the last checkpoints are kept" in err and "Traceback" not in err
    time.sleep(1)
    assert not _workers_of(proc.pid) and not any(os.path.exists(f"/proc/{pid}") for pid in workers)


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
