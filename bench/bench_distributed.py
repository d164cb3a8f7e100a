"""Wall time of one grid on 1 process × D devices and on P processes × D devices (local CPU processes).

    python bench/bench_distributed.py                                  # the README's small grid, P = 2, D = 2
    python bench/bench_distributed.py --processes=4 --flags="--experiment=scheme5,scheme5_6 --seeds=4"

Each setting runs ``run.py`` with the given flags into a fresh results directory and a fresh compilation
cache (so both pay their compiles), with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``; the
multi-process setting starts P processes on 127.0.0.1 and times until the last one exits. Prints both
wall times and whether the final test metrics agree. On a machine with fewer cores than P × D devices
the processes share the cores, so expect no speed-up: the figure shows the cost of the coordination.
"""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ("--experiment=scheme5,scheme5_6 --seeds=2 --sft_epochs=2 --rce_epochs=1 --grpo_epochs=3")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(flags: list[str], processes: int, devices: int, timeout: float) -> tuple[float, str]:
    out = tempfile.mkdtemp(prefix="leverjax-bench-dist-")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "LEVERJAX_CACHE_DIR": os.path.join(out, "xla")}
    common = [sys.executable, os.path.join(ROOT, "run.py"), *flags, f"--out={os.path.join(out, 'grid')}"]
    if processes > 1:
        port = _port()
        cmds = [common + [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                          f"--process_id={i}"] for i in range(processes)]
    else:
        cmds = [common]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for c in cmds]
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t0)))
            if p.returncode != 0:
                raise SystemExit(f"a process failed ({p.returncode}): {err[-2000:]}")
        return time.perf_counter() - t0, os.path.join(out, "grid", "metrics.csv")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # SIGTERM is taken by JAX as a preemption notice


def _finals(path: str) -> dict:
    with open(path, newline="") as f:
        return {(r["run"], r["metric"]): float(r["value"]) for r in csv.DictReader(f) if r["phase"] == "final"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", default=SMALL, help="run.py flags of the grid")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices", type=int, default=2, help="forced host devices per process")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    flags = shlex.split(args.flags)
    one, csv_one = _run(flags, 1, args.devices, args.timeout)
    many, csv_many = _run(flags, args.processes, args.devices, args.timeout)
    a, b = _finals(csv_one), _finals(csv_many)
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for k in a) if a.keys() == b.keys() else float("inf")
    print(f"grid: {args.flags}")
    print(f"1 process × {args.devices} devices: {one:.1f} s")
    print(f"{args.processes} processes × {args.devices} devices: {many:.1f} s")
    print(f"final test metrics: {len(a)} values, largest relative difference {worst:.2g}")


if __name__ == "__main__":
    main()
