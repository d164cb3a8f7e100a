"""Several cooperating processes, on one host or many, with JAX's multi-controller runtime.

Every process runs the same command. :func:`initialize` connects them through ``jax.distributed``: process
0 hosts the coordination service, and afterwards ``jax.devices()`` lists the devices of every process, so a
mesh over them spans the whole cluster while each process computes only the shards on its own devices.
The run axis of a training program is sharded over that mesh; runs are independent, so the only
cross-process traffic is gathering results (metrics once per epoch, the final evaluation) and the
coordination below.

On top of JAX this module adds what a training job needs to fail cleanly instead of hanging:

* a start-up check (:func:`agree`): every process publishes a hash of what it is about to do (for the
  launcher: the resolved grid) and the processes compare them before anything is written; a process
  started with another command is named;
* decisions of process 0 shared with the others (:func:`broadcast`), e.g. which runs are already finished,
  so all processes train the same groups even when they see files at slightly different moments;
* barriers with a bounded wait (:func:`barrier`);
* a watchdog thread per process: every process publishes a counter in the coordination service's key-value
  store at a short interval; a process whose counter stops for ``heartbeat_timeout`` seconds (killed,
  crashed, its host gone), or losing the coordinator itself, makes every other process print one line
  naming it and exit with status 2. Finished runs and the last per-epoch checkpoints stay on disk; running
  the same command again on every process resumes. JAX's own heartbeat (which would abort the process with
  a C++ stack trace) is set well above that timeout so this check speaks first.

Everything here is a no-op in a single process, so callers need no special case.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import re
import sys
import threading
import time
from typing import Any, Mapping

from leverjax.errors import ConfigError, LeverjaxError
from leverjax.run.keys import short_hash


class DistributedError(LeverjaxError):
    """A multi-process set-up that cannot work: coordinator unreachable, processes started differently."""


class _State:
    def __init__(self):
        self.active = False
        self.process_id = 0
        self.num_processes = 1
        self.coordinator = ""
        self.timeout = 300.0
        self.heartbeat = 60.0
        self.sequence = 0
        self.watchdog: _Watchdog | None = None


_STATE = _State()
_PREFIX = "leverjax"


def is_multiprocess() -> bool:
    """Whether this process is one of several started by :func:`initialize`."""
    return _STATE.active and _STATE.num_processes > 1


def is_primary() -> bool:
    """Whether this process writes the shared result files (process 0; always true in a single process)."""
    import jax

    return jax.process_index() == 0


def describe() -> str:
    """``process I of N`` (empty in a single process)."""
    return f"process {_STATE.process_id} of {_STATE.num_processes}" if is_multiprocess() else ""


def _client():
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    if client is None:
        raise DistributedError("the JAX distributed runtime is not initialised")
    return client


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout: float = 300.0, heartbeat_timeout: float = 60.0) -> None:
    """Connects this process to the others; call before anything touches a JAX device.

    Without arguments JAX detects the cluster (SLURM, Open MPI, Kubernetes, Cloud TPU, ...) from the
    environment; otherwise give all three of ``coordinator_address`` (``HOST:PORT`` of process 0, which
    listens there), ``num_processes`` and ``process_id``. ``timeout``: seconds to wait for all processes
    to connect, and the bound on every later wait for another process (barriers, the start-up check).
    ``heartbeat_timeout``: seconds without a sign of life after which a process counts as lost.

    Raises :class:`DistributedError` with one sentence when the coordinator cannot be reached in time,
    no cluster is detected, or the processes disagree on their number.
    """
    import jax

    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
        missing = ", ".join(f"--{k}" for k, v in given.items() if v is None)
        raise ConfigError(f"a multi-process run needs --coordinator_address, --num_processes and --process_id "
                          f"together (missing {missing}); give none of them to detect a SLURM/MPI cluster")
    if coordinator_address is not None and not re.fullmatch(r"\[?[A-Za-z0-9.:_-]+\]?:\d{1,5}", coordinator_address):
        raise ConfigError(f"--coordinator_address={coordinator_address!r} must look like HOST:PORT")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"--num_processes={num_processes} must be at least 1")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"--process_id={process_id} must be in 0..{num_processes - 1} (--num_processes={num_processes})")
    if timeout <= 0 or heartbeat_timeout <= 0:
        raise ConfigError("--distributed_timeout and --heartbeat_timeout must be positive")
    if _STATE.active:
        raise DistributedError("the distributed runtime is already initialised in this process")
    # CPU hosts exchange results over TCP with gloo (GPUs use NCCL whatever this says).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:  # orbax's barriers through the coordination service (bounded waits) instead of device collectives
        import importlib

        from absl import flags

        importlib.import_module("orbax.checkpoint")  # defines the flag
        flags.FLAGS.experimental_orbax_use_distributed_barrier = True
    except Exception:  # noqa: BLE001 -- an orbax without the flag: its collective barriers work too
        pass
    where = f" at {coordinator_address}" if coordinator_address else ""
    who = f"process {process_id}" if process_id is not None else "this process"
    if coordinator_address is not None and process_id != 0:
        # JAX aborts the process (a C++ stack trace) when the coordinator does not answer in time; wait for
        # its port here first, so that an unreachable coordinator is one clear line.
        _wait_for_port(coordinator_address, timeout, who)
    # JAX aborts the process (a C++ stack trace) when not every process has connected in time; say it first.
    count = f"all {num_processes}" if num_processes else "all"
    timer = threading.Timer(timeout, abort, (f"{who}: not {count} processes connected to the coordinator{where} within "
                                              f"{timeout:g} s; start every process with the same --num_processes and "
                                              f"--coordinator_address, or raise --distributed_timeout",))
    timer.daemon = True
    timer.start()
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=int(timeout) + 30,
                                   heartbeat_timeout_seconds=int(2 * heartbeat_timeout + 30))
    except ValueError as e:
        if coordinator_address is None:
            raise DistributedError(f"--distributed: no cluster environment detected ({_first_line(e)}); start the "
                                   f"processes with srun/mpirun, or give --coordinator_address=HOST:PORT "
                                   f"--num_processes=N --process_id=I") from None
        raise DistributedError(f"cannot start the distributed runtime: {_first_line(e)}") from None
    except RuntimeError as e:  # JaxRuntimeError/XlaRuntimeError derive from RuntimeError
        text = str(e)
        if "before any JAX" in text or "already" in text:
            raise DistributedError(f"cannot start the distributed runtime: {_first_line(e)}") from None
        raise DistributedError(
            f"{who} could not connect to the coordinator{where} within {timeout:g} s ({_first_line(e)}); check that "
            f"every process was started, that the address is process 0's host and reachable, and that "
            f"--num_processes is the same everywhere") from None
    finally:
        timer.cancel()
    _STATE.active = True
    _STATE.process_id = jax.process_index()
    _STATE.num_processes = jax.process_count()
    _STATE.coordinator = coordinator_address or ""
    _STATE.timeout = float(timeout)
    _STATE.heartbeat = float(heartbeat_timeout)
    agree("start", {"num_processes": num_processes if num_processes is not None else jax.process_count()},
          what="--num_processes")
    if num_processes is not None and jax.process_count() != num_processes:
        raise DistributedError(f"process {_STATE.process_id} was started with --num_processes={num_processes}, but "
                               f"the coordinator runs {jax.process_count()} processes; give every process the "
                               f"same --num_processes")
    if is_multiprocess():
        _STATE.watchdog = _Watchdog(_client(), _STATE.process_id, _STATE.num_processes, _STATE.heartbeat)
        _STATE.watchdog.start()
        atexit.register(finish)
        previous = sys.excepthook

        def excepthook(kind, value, tb):  # an uncaught exception: stop now rather than in JAX's exit barrier
            settle()  # when a lost process caused it, the watchdog names that process instead
            previous(kind, value, tb)
            abort(f"process {_STATE.process_id} stopped on an unexpected {kind.__name__}", 1)

        sys.excepthook = excepthook


def _wait_for_port(address: str, timeout: float, who: str) -> None:
    import socket

    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2.0).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"{who} could not connect to the coordinator at {address} within {timeout:g} s "
                                       f"({e.strerror or e}); start process 0 there (it listens on that port), check "
                                       f"the address and that the port is reachable, or raise "
                                       f"--distributed_timeout") from None
        time.sleep(0.25)


def _key(name: str) -> str:
    _STATE.sequence += 1
    return f"{_PREFIX}/{_STATE.sequence}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def agree(name: str, payload: Mapping[str, Any], *, what: str = "the command") -> None:
    """Checks that every process holds the same ``payload``; raises :class:`DistributedError` naming the
    processes that differ from process 0 and the parts (top-level keys) in which they differ.

    Every process must call it at the same point of the program with the same ``name``.
    """
    if not is_multiprocess():
        return
    client = _client()
    key = _key(f"agree-{name}")
    mine = {k: short_hash(v, 12) for k, v in payload.items()}
    client.key_value_set(f"{key}/{_STATE.process_id}", json.dumps(mine))
    timeout_ms = int(_STATE.timeout * 1000)
    others = {}
    for pid in range(_STATE.num_processes):
        if pid == _STATE.process_id:
            continue
        try:
            others[pid] = json.loads(client.blocking_key_value_get(f"{key}/{pid}", timeout_ms))
        except Exception:  # noqa: BLE001 -- a timeout or a lost coordinator: name the process either way
            raise DistributedError(f"process {pid} did not reach the start-up check ({name}) within "
                                   f"{_STATE.timeout:g} s; start every process with the same command") from None
    views = {_STATE.process_id: mine, **others}
    reference = views[0]
    differ = {pid: sorted(k for k in set(view) | set(reference) if view.get(k) != reference.get(k))
              for pid, view in views.items() if view != reference}
    if differ:
        parts = "; ".join(f"process {pid} differs from process 0 in {', '.join(keys)}" for pid, keys in differ.items())
        raise DistributedError(f"the processes were not started with the same {what} ({parts}); start every "
                               f"process with the same flags")


def broadcast(name: str, value: Any) -> Any:
    """``value`` as process 0 has it (JSON-serialisable), on every process."""
    if not is_multiprocess():
        return value
    client = _client()
    key = _key(f"bcast-{name}")
    if _STATE.process_id == 0:
        client.key_value_set(key, json.dumps(value, default=str))
        return json.loads(json.dumps(value, default=str))
    try:
        return json.loads(client.blocking_key_value_get(key, int(_STATE.timeout * 1000)))
    except Exception as e:  # noqa: BLE001
        raise DistributedError(f"process 0 did not share {name!r} within {_STATE.timeout:g} s "
                               f"({_first_line(e)})") from None


def barrier(name: str) -> None:
    """Waits until every process gets here (at most the distributed timeout)."""
    if not is_multiprocess():
        return
    key = _key(f"barrier-{name}")
    try:
        _client().wait_at_barrier(key, int(_STATE.timeout * 1000))
    except Exception as e:  # noqa: BLE001
        settle()
        raise DistributedError(f"not every process reached {name!r} within {_STATE.timeout:g} s "
                               f"({_first_line(e)})") from None


def settle() -> None:
    """Gives the watchdog the time to notice a lost process (it then ends this process naming it); returns
    when none was lost. Called before reporting an unexpected error of a multi-process run."""
    if _STATE.watchdog is not None:
        _STATE.watchdog.settle()


def put(tree: Any, sharding) -> Any:
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans several processes: every
    process holds the whole value (the same one: data, hyperparameters, a restored checkpoint) and keeps
    the shards of its own devices. (``jax.device_put`` would compare the values across processes first,
    which costs a gather of everything and fails on NaN entries.)"""
    import jax
    import numpy as np

    if not is_multiprocess():
        return jax.device_put(tree, sharding)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree)


@functools.lru_cache(maxsize=16)
def _replicator(mesh):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.jit(lambda tree: tree, out_shardings=NamedSharding(mesh, PartitionSpec()))


def to_host(tree: Any) -> Any:
    """``tree`` as NumPy arrays on every process. Arrays sharded over several processes are gathered in
    one compiled program per tree structure (gathering leaf by leaf would compile a program per leaf at
    every call). A failure while gathering, which in practice means another process was lost, goes
    waits for the watchdog first (:func:`settle`) so that the lost process is named."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    spread = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array) and not x.is_fully_addressable]
    if spread:
        # CPU collectives (gloo) give up when the processes arrive more than 30 s apart (one may still be
        # compiling); meeting at a barrier first, whose wait is bounded by the distributed timeout, keeps
        # them together.
        barrier("gather")
        try:
            by_mesh: dict = {}
            for i in spread:
                sharding = leaves[i].sharding
                if isinstance(sharding, NamedSharding):
                    by_mesh.setdefault(sharding.mesh, []).append(i)
                else:
                    from jax.experimental import multihost_utils

                    leaves[i] = np.asarray(multihost_utils.process_allgather(leaves[i], tiled=True))
            for mesh, index in by_mesh.items():
                gathered = _replicator(mesh)([leaves[i] for i in index])
                for i, x in zip(index, gathered):
                    leaves[i] = np.asarray(x.addressable_data(0))
        except Exception:  # noqa: BLE001
            settle()
            raise
    leaves = [x if isinstance(x, np.ndarray) else np.asarray(jax.device_get(x)) for x in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def finish() -> None:
    """Marks this process as finished normally (so the others do not count it as lost) and stops its
    watchdog. Called at exit; safe to call twice."""
    dog = _STATE.watchdog
    if dog is None:
        return
    _STATE.watchdog = None
    dog.stop()
    try:
        _client().key_value_set(f"{_PREFIX}/done/{_STATE.process_id}", "1", allow_overwrite=True)
    except Exception:  # noqa: BLE001 -- the coordinator may already be gone at exit
        pass


def abort(message: str, status: int = 2) -> None:
    """Ends this process at once with one line, ``error: message``, on stderr and exit ``status``, without
    JAX's exit handlers (whose shutdown barrier would wait for a lost process and then abort): in a
    multi-process run the others see it stop and exit naming it, instead of waiting for it at their next
    synchronisation point."""
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001
        pass
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    if _STATE.active and _STATE.num_processes > 1:
        try:  # the coordinator lives in process 0: when it leaves, JAX aborts the others at once, so process 0
            # leaves last (waiting a few seconds at most) and the others can say why they stop too
            client = _client()
            client.key_value_set(f"{_PREFIX}/aborted/{_STATE.process_id}", "1", allow_overwrite=True)
            if _STATE.process_id == 0:
                deadline = time.monotonic() + min(10.0, _STATE.heartbeat)
                while time.monotonic() < deadline:
                    ended = {k.rsplit("/", 1)[-1] for prefix in ("aborted", "done")
                             for k, _ in client.key_value_dir_get(f"{_PREFIX}/{prefix}/")}
                    if len(ended) >= _STATE.num_processes:
                        break
                    time.sleep(0.1)
        except Exception:  # noqa: BLE001 -- the coordinator may be gone already
            pass
    os._exit(status)


class _Watchdog(threading.Thread):
    """Publishes this process's heartbeat counter and watches the others' (see the module docstring)."""

    def __init__(self, client, process_id: int, num_processes: int, timeout: float):
        super().__init__(name="leverjax-watchdog", daemon=True)
        self.client = client
        self.process_id = process_id
        self.num_processes = num_processes
        self.timeout = timeout
        self.interval = min(max(timeout / 10, 0.2), 5.0)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def settle(self) -> None:
        """Blocks until the watchdog has had time to see a lost process (it then ends this process)."""
        deadline = time.monotonic() + self.timeout + 3 * self.interval + 2
        while self.is_alive() and not self._stop_event.is_set() and time.monotonic() < deadline:
            time.sleep(self.interval / 2)

    def run(self) -> None:
        beat = 0
        now = time.monotonic()
        seen = {pid: (None, now) for pid in range(self.num_processes) if pid != self.process_id}
        coordinator_ok = now
        while not self._stop_event.wait(self.interval):
            beat += 1
            now = time.monotonic()
            try:
                self.client.key_value_set(f"{_PREFIX}/alive/{self.process_id}", str(beat), allow_overwrite=True)
                alive = dict(self.client.key_value_dir_get(f"{_PREFIX}/alive/"))
                done = dict(self.client.key_value_dir_get(f"{_PREFIX}/done/"))
                coordinator_ok = now
            except Exception as e:  # noqa: BLE001
                if self._stop_event.is_set():
                    return
                if self.process_id != 0 and now - coordinator_ok > self.timeout:
                    where = f" at {_STATE.coordinator}" if _STATE.coordinator else ""
                    abort(f"process {self.process_id} lost the coordinator (process 0{where}) for "
                           f"{self.timeout:g} s ({_first_line(e)}); process 0 stopped or its host is unreachable. "
                           f"Finished runs are kept; start all {self.num_processes} processes again with the same "
                           f"command to resume")
                continue
            stale = []
            for pid, (value, since) in seen.items():
                key = f"{_PREFIX}/alive/{pid}"
                if f"{_PREFIX}/done/{pid}" in done:
                    continue
                if alive.get(key) != value:
                    seen[pid] = (alive.get(key), now)
                elif now - since > self.timeout:
                    stale.append(pid)
            if stale and not self._stop_event.is_set():
                names = ", ".join(f"process {pid}" for pid in stale)
                abort(f"{names} stopped (no sign of life for {self.timeout:g} s: killed, crashed or its host is "
                       f"unreachable); process {self.process_id} stops too. Finished runs are kept; start all "
                       f"{self.num_processes} processes again with the same command to resume")
