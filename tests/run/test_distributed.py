"""The grid on two cooperating processes (jax.distributed on 127.0.0.1, CPU collectives over gloo), each
with 2 forced host devices: the same numbers as one process, only process 0 writes the result files, a
killed process stops the other with a message naming it and a re-run resumes to the same numbers, and
set-ups that cannot work are refused at start-up with one line. The module's tests share one grid.

Every process is started in its own process group and killed (SIGKILL: JAX turns SIGTERM into a
preemption notice) when a test ends, and every wait is bounded."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from leverjax.data import save_npz, synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(hidden=16, sft_epochs=1, rce_epochs=0, grpo_epochs=3, sft_batch_size=16, rce_batch_size=8,
            grpo_batch_size=8, eval_chunk=64, eval_shots=2)
SYNTH = dict(seed=0, num_examples=200, num_queries=40, num_test_queries=40, pool_size=8, max_trajectories=6, dim=16)
# Two experiments of one program: 2 runs on the 4 devices of two processes (padded to 4).
# checkpoint_seconds=0: a checkpoint after every (millisecond) epoch, for the resume test
GRID = ["--experiment=scheme5,scheme5_6", "--seeds=1", "--checkpoint_seconds=0",
        *[f"--{k}={v}" for k, v in TINY.items()]]
WAIT = 900  # seconds any one process may take (compiling on a loaded 2-core machine is slow)

# Runs run.py after recording every file this process opens for writing or moves into place from Python
# (orbax's array data is written by tensorstore, outside Python).
ENTRY = textwrap.dedent(f"""
    import atexit, builtins, json, os, sys
    sys.path.insert(0, {ROOT!r})
    written = []
    _open, _replace = builtins.open, os.replace
    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and isinstance(file, (str, os.PathLike)):
            written.append(os.path.abspath(file))
        return _open(file, mode, *a, **k)
    def replace(src, dst, *a, **k):
        written.append(os.path.abspath(dst))
        return _replace(src, dst, *a, **k)
    builtins.open, os.replace = open_, replace
    log = os.environ.get("WRITE_LOG")
    if log:
        atexit.register(lambda: _open(log, "w").write(json.dumps(written)))
    sys.argv[0] = os.path.join({ROOT!r}, "run.py")
    from leverjax.cli import run
    run()
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    save_npz(synth.make_synthetic(**SYNTH), str(path))
    return str(path)


def env(devices=2, **extra):
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}",
            **extra}


class Processes:
    """Processes started in their own process groups; ``kill()`` ends all that are left."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, args, name, **env_extra):
        out = open(self.tmp_path / f"{name}.out", "w")
        err = open(self.tmp_path / f"{name}.err", "w")
        proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], env=env(**env_extra), stdout=out, stderr=err,
                                cwd=str(self.tmp_path), start_new_session=True)
        proc.name = name
        self.procs.append(proc)
        return proc

    def start_pair(self, args, tag, *, per_process=None, heartbeat=10, timeout=60, logs=False):
        port = free_port()
        pair = []
        for i in range(2):
            extra = per_process[i] if per_process else []
            flags = [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
                     f"--heartbeat_timeout={heartbeat}", f"--distributed_timeout={timeout}", *args, *extra]
            log = {"WRITE_LOG": str(self.tmp_path / f"{tag}{i}.writes")} if logs else {}
            pair.append(self.start(flags, f"{tag}{i}", **log))
        return pair

    def wait(self, procs, timeout=WAIT):
        deadline = time.monotonic() + timeout
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [p.returncode for p in procs]

    def text(self, proc, stream="out"):
        return (self.tmp_path / f"{proc.name}.{stream}").read_text()

    def kill(self, proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def kill_all(self):
        for p in self.procs:
            if p.poll() is None:
                self.kill(p)


@pytest.fixture
def procs(tmp_path):
    group = Processes(tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def values(rows):
    """(run, phase, epoch, metric) -> value."""
    return {(r["variant"], r["phase"], r["epoch"], r["metric"]): float(r["value"]) for r in rows}


@pytest.fixture(scope="module")
def two_process_grid(data, tmp_path_factory):
    """The grid on two processes × 2 devices: process 1 SIGKILLed after the first GRPO epoch (what process 0 then
    did, and the group's status), the same command again on both (their output and the files each wrote), and
    the grid on one process × 2 devices."""
    tmp = tmp_path_factory.mktemp("pair")
    group = Processes(tmp)
    try:
        out = tmp / "grid"
        args = [*GRID, f"--data={data}", f"--out={out}"]
        p0, p1 = group.start_pair(args, "k", heartbeat=4)
        deadline = time.monotonic() + WAIT
        while "epoch 2/4" not in group.text(p0):  # SFT and one GRPO epoch done and checkpointed
            assert p0.poll() is None and p1.poll() is None, group.text(p0, "err")[-2000:] + group.text(p1, "err")[-2000:]
            assert time.monotonic() < deadline, "the grid did not reach its second epoch in time"
            time.sleep(0.2)
        group.kill(p1)
        t0 = time.monotonic()
        code = group.wait([p0], timeout=60)[0]
        killed = {"code": code, "seconds": time.monotonic() - t0, "err": group.text(p0, "err"),
                  "status": json.loads(next((out / "status").iterdir()).read_text())}
        # the same command again on both processes, and the single process beside them
        pair = group.start_pair(args, "p", logs=True)
        single = group.start([*GRID, f"--data={data}", f"--out={tmp / 'single'}"], "single")
        codes = group.wait([*pair, single])
        assert codes == [0, 0, 0], [group.text(p, "err")[-3000:] for p in (*pair, single)]
        return {"out": out, "single": tmp / "single", "group": group, "pair": pair, "single_proc": single,
                "killed": killed}
    finally:
        group.kill_all()


def test_two_processes_give_the_single_process_numbers(two_process_grid):
    got = values(read_csv(two_process_grid["out"] / "metrics.csv"))
    want = values(read_csv(two_process_grid["single"] / "metrics.csv"))
    assert set(got) == set(want) and len({k[0] for k in got}) == 2
    assert any(k[1] == "final" for k in got) and any(k[1] == "grpo" for k in got)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-5, atol=2e-6, err_msg=str(key))
    group, (p0, p1) = two_process_grid["group"], two_process_grid["pair"]
    assert "on 4 device(s)" in group.text(p0) and "report.md)" in group.text(p0)
    assert "on 2 device(s)" in group.text(two_process_grid["single_proc"])
    assert "process 0 prints the progress" in group.text(p1) and "»» grid" not in group.text(p1)


def test_only_process_0_writes_the_result_files(two_process_grid):
    out = str(two_process_grid["out"])
    tmp = two_process_grid["out"].parent

    def result_files(i):  # files written from Python under the results directory, orbax folders aside
        with open(tmp / f"p{i}.writes") as f:
            paths = json.load(f)
        return {os.path.relpath(p, out) for p in paths if p.startswith(out + os.sep)
                and not any(part in p for part in ("/ckpt/", "/best", "/final/", "/prefix/"))}

    first, second = result_files(0), result_files(1)
    assert {"grid.json", "metrics.csv", "report.md"} <= first
    assert any(p.startswith("status/") for p in first) and any(p.endswith("results.json") for p in first)
    assert second == set(), sorted(second)[:10]
    # orbax did write the best-epoch and final parameters (with the shards of both processes)
    group_dir = next((two_process_grid["out"] / "runs").iterdir())
    assert (group_dir / "best").is_dir() and (group_dir / "final").is_dir() and not (group_dir / "ckpt").exists()


def test_a_killed_process_stops_the_other_and_a_rerun_resumes(two_process_grid):
    """Process 0 ends with exit code 2 and a line naming process 1 soon after the kill; the group stays
    running in its status; the same command on both processes resumes and gives the single process's numbers
    (the test above)."""
    killed = two_process_grid["killed"]
    assert killed["code"] == 2, killed["err"][-3000:]
    assert "error: process 1 stopped" in killed["err"] and "same command to resume" in killed["err"], killed["err"][-3000:]
    assert killed["seconds"] < 40
    assert killed["status"]["state"] == "running"
    # from the group's last checkpoint, or (killed before the first GRPO epoch's checkpoint was written) from
    # the SFT prefix its runs share
    text = two_process_grid["group"].text(two_process_grid["pair"][0])
    assert "resuming g01" in text or "reusing the sft phases" in text, text[-3000:]


def test_processes_started_with_different_commands_are_refused(data, procs, tmp_path):
    args = [*GRID, f"--data={data}", f"--out={tmp_path / 'grid'}"]
    pair = procs.start_pair(args, "m", per_process=[[], ["--kl_beta=0.3"]])
    assert procs.wait(pair, timeout=120) == [2, 2]
    for p in pair:
        err = procs.text(p, "err").strip()
        assert err.splitlines()[-1].startswith("error: the processes were not started with the same command"), err
        assert "process 1 differs from process 0 in grid" in err
    assert not (tmp_path / "grid").exists()  # refused before anything was written
    # A different process count is refused too.
    pair = procs.start_pair(args, "n", per_process=[[], ["--num_processes=3"]])
    assert procs.wait(pair, timeout=120) == [2, 2]
    assert "--num_processes" in procs.text(pair[0], "err") and "process 1 differs" in procs.text(pair[0], "err")


def test_an_unreachable_coordinator_fails_in_time(procs):
    port = free_port()
    p = procs.start(["--experiment=scheme5", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                     "--process_id=1", "--distributed_timeout=3"], "lonely")
    t0 = time.monotonic()
    assert procs.wait([p], timeout=90) == [2]
    err = procs.text(p, "err").strip()
    assert err.startswith("error: process 1 could not connect to the coordinator at 127.0.0.1:") and len(
        err.splitlines()) == 1, err
    assert time.monotonic() - t0 < 60
    # Process 0 alone: the others never connect.
    p = procs.start(["--experiment=scheme5", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                     "--process_id=0", "--distributed_timeout=3"], "alone")
    assert procs.wait([p], timeout=90) == [2]
    err = procs.text(p, "err").strip()
    assert err.startswith("error: process 0: not all 2 processes connected to the coordinator") and len(
        err.splitlines()) == 1, err
    bad = procs.start(["--experiment=scheme5", "--num_processes=2"], "half")
    assert procs.wait([bad], timeout=90) == [2]
    assert "needs --coordinator_address, --num_processes and --process_id together" in procs.text(bad, "err")
