"""Several tasks at once, each in a process of its own: the launcher's way of training two groups of a grid
side by side (``run.py --workers``).

Why processes: on a CPU a group's program does not keep every core busy (a GRPO step is a chain of small
kernels), so two groups trained at once finish sooner than one after the other. Measured on a 2-core
CPU, an epoch of 5 vmapped runs in each of two processes against one process alone: GRPO 1.32x the
throughput, SFT and RCE 1.10x; two threads of one process reached 1.22x on GRPO. The processes are not
pinned to cores (pinned: the same throughput side by side, and a process alone could not use the idle
core), and each uses all of them, so a task computes what it computes alone, bit for bit.

The pool is generic: ``run_tasks`` hands each task to the first idle worker once every task it depends
on has ended (in any way), preferring the tasks others wait for, then the costlier ones; the worker
calls ``worker_fn(payload, emit, *worker_args)`` and sends back what it returns. Messages ``emit``-ted
on the way (progress, lines to print) reach ``on_message`` in the parent at once. A worker that dies
(killed, out of memory, a crash in native code) loses only its task: ``on_lost`` is told, and a fresh
worker takes its place. The workers are fresh interpreters (``python -m leverjax.run.workers``; JAX is not
fork-safe), so they import leverjax afresh and get the parent's JAX settings through ``jax_options``.
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from multiprocessing import connection
from typing import Any, Callable, Hashable, Mapping, Sequence


def next_task(waiting: Sequence[Hashable], ended: set, depends: Mapping[Hashable, set],
              cost: Mapping[Hashable, float]) -> Hashable | None:
    """The task an idle worker should take: among the waiting tasks whose dependencies have all ended, the
    one the most waiting tasks depend on, then the costliest, then the first in ``waiting``'s order;
    ``None`` when no task is ready."""
    ready = [t for t in waiting if depends.get(t, set()) <= ended]
    if not ready:
        return None
    waited_for = {t: sum(1 for u in waiting if t in depends.get(u, set())) for t in ready}
    return max(ready, key=lambda t: (waited_for[t], cost.get(t, 0.0), -waiting.index(t)))


def _serve(fd: int) -> None:
    """A worker process (``python -m leverjax.run.workers FD``): receives its setup, then ``(task id, payload)``
    items until ``None``, over the connection on file descriptor ``fd``; sends ``("message", task, message)``
    for each emitted message and ``("done", task, outcome)``."""
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    options, worker_fn, worker_args = conn.recv()
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    for name, value in options.items():
        jax.config.update(name, value)
    try:
        while True:
            item = conn.recv()
            if item is None:
                return
            task, payload = item
            outcome = worker_fn(payload, lambda message, task=task: conn.send(("message", task, message)),
                                *worker_args)
            conn.send(("done", task, outcome))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):  # Ctrl-C, or the launcher has gone
        return


def jax_options() -> dict[str, Any]:
    """The parent's JAX settings a worker needs to compute and cache what the parent would."""
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes", "jax_enable_x64", "jax_default_matmul_precision")
    return {name: getattr(jax.config, name) for name in names if hasattr(jax.config, name)}


def run_tasks(payloads: Mapping[Hashable, Any], *, workers: int, worker_fn: Callable, worker_args: tuple = (),
              depends: Mapping[Hashable, set] | None = None, cost: Mapping[Hashable, float] | None = None,
              on_start: Callable[[Hashable], None] = lambda task: None,
              on_message: Callable[[Hashable, Any], None] = lambda task, message: None,
              on_done: Callable[[Hashable, Any], None] = lambda task, outcome: None,
              on_lost: Callable[[Hashable, int | None], None] = lambda task, exitcode: None) -> None:
    """Runs every task of ``payloads`` (in its order, as dependencies allow) in ``workers`` processes and
    returns when all have ended. ``worker_fn`` and ``worker_args`` must be picklable (a module-level
    function). ``depends[t]``: the tasks that must end before ``t`` starts (tasks outside ``payloads`` count
    as ended). ``cost[t]``: a relative estimate of ``t``'s duration (the costlier ready task goes first).
    Callbacks run in the calling process: ``on_start`` when a task is handed out, ``on_message`` for each
    message it emits, ``on_done`` with ``worker_fn``'s result, ``on_lost`` when its worker died first
    (with the worker's exit code)."""
    waiting = list(payloads)
    depends = {t: set(depends.get(t, ())) & set(payloads) if depends else set() for t in payloads}
    cost = dict(cost or {})
    ended: set = set()
    setup = (jax_options(), worker_fn, worker_args)
    # The workers are fresh interpreters (not multiprocessing's spawn, which re-runs the caller's main
    # script in each child and hangs when that script has no ``if __name__ == "__main__"`` guard); they
    # import what the caller imports from the same sys.path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    pool: list[dict] = []  # per worker: its process, its connection, the task it runs (or None)

    def start_worker() -> dict:
        ours, theirs = multiprocessing.Pipe()
        process = subprocess.Popen([sys.executable, "-m", "leverjax.run.workers", str(theirs.fileno())],
                                   pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        worker = {"process": process, "conn": ours, "task": None}
        try:
            ours.send(setup)
        except (BrokenPipeError, EOFError):
            pass  # it died at start: found below when its connection is read
        return worker

    def lose(w: dict) -> None:
        task, w["task"] = w["task"], None
        w["conn"].close()
        w["process"].wait()
        if task is not None:
            ended.add(task)
            on_lost(task, w["process"].returncode)

    try:
        pool = [start_worker() for _ in range(max(1, min(workers, len(waiting))))]
        while waiting or any(w["task"] is not None for w in pool):
            for w in pool:
                if w["task"] is None and waiting:
                    task = next_task(waiting, ended, depends, cost)
                    if task is None:
                        break
                    waiting.remove(task)
                    w["task"] = task
                    on_start(task)
                    try:
                        w["conn"].send((task, payloads[task]))
                    except (BrokenPipeError, EOFError):
                        pass  # read below
            busy = {w["conn"]: w for w in pool if w["task"] is not None}
            if not busy:  # no task ready and none running: a dependency that can never end
                raise RuntimeError(f"tasks {waiting} wait for each other: {[depends[t] for t in waiting]}")
            for conn in connection.wait(list(busy)):
                w = busy[conn]
                try:
                    kind, task, data = conn.recv()
                except (EOFError, OSError):  # the worker died: its task is lost, a fresh worker replaces it
                    lose(w)
                    pool[pool.index(w)] = start_worker()
                    continue
                if kind == "message":
                    on_message(task, data)
                else:
                    w["task"] = None
                    ended.add(task)
                    on_done(task, data)
        for w in pool:
            try:
                w["conn"].send(None)
            except (BrokenPipeError, EOFError):
                pass
        for w in pool:
            try:
                w["process"].wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass  # ended below
    finally:
        for w in pool:
            if w["process"].poll() is None:
                w["process"].terminate()
                w["process"].wait(timeout=10)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
