"""Logs for the tools researchers already use: TensorBoard event files, and Weights & Biases runs.

**TensorBoard** (``tensorboardX``, no TensorFlow needed): one event directory per run under the results
directory, ``tb/<variant>/seed=<n>/``, so ``tensorboard --logdir=results/<grid>/tb`` shows every run.
The step is the epoch counted over all phases (1, 2, ...); each scalar is tagged ``<phase>/<metric>``
(``sft/train_loss``, ``grpo/train_kl``, ``grpo/val_oracle_acc_2``), and the final test metrics are
``final/<metric>`` at the last step. Epochs are written as they finish; when a run's group ends, epochs
it did not train in this process (restored from a checkpoint, or SFT/RCE phases reused from an earlier
group) are filled in by rewriting its directory from its complete history.

**Weights & Biases** (optional: ``pip install wandb``): with a project name, every run becomes a W&B run
(name ``<variant>/seed=<n>``, group ``<variant>``, its config as the W&B config) when its group finishes,
with the same tags and steps and the final metrics in its summary. ``WANDB_MODE=offline`` keeps the runs
on disk (``<results>/wandb/``) for a later ``wandb sync``.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from typing import Any, Mapping, Sequence

from leverjax.errors import ConfigError

RECORD_KEYS = ("phase", "epoch", "run", "variant", "seed")


def run_subdir(run_name: str) -> str:
    """``<variant>/seed=<n>`` of a run name, with characters unsafe in a path replaced."""
    variant, _, seed = run_name.rpartition("/")
    variant = re.sub(r"[^A-Za-z0-9._=,+\[\]-]", "_", variant or run_name)
    return os.path.join(variant, re.sub(r"[^A-Za-z0-9._=-]", "_", seed)) if seed else variant


def _scalars(record: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in record.items():
        if k in RECORD_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


class TensorBoardLogs:
    """Event files of the runs of one results directory (module docstring)."""

    def __init__(self, root: str):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:  # a core dependency: requirements.txt
            raise ConfigError("TensorBoard logs need tensorboardX (pip install -r requirements.txt)") from e
        self._writer_class = SummaryWriter
        self.root = os.path.join(root, "tb")
        self._writers: dict[str, Any] = {}
        self.logged: dict[str, int] = {}  # run name -> epochs written by this process

    def directory(self, run_name: str) -> str:
        return os.path.join(self.root, run_subdir(run_name))

    def _writer(self, run_name: str):
        if run_name not in self._writers:
            self._writers[run_name] = self._writer_class(logdir=self.directory(run_name), flush_secs=30)
        return self._writers[run_name]

    def epoch(self, run_name: str, step: int, phase: str, metrics: Mapping[str, Any]) -> None:
        """One epoch of one run (``metrics``: the epoch record; non-numeric and non-finite values skipped)."""
        w = self._writer(run_name)
        for k, v in _scalars(metrics).items():
            w.add_scalar(f"{phase}/{k}", v, step)
        w.flush()
        self.logged[run_name] = self.logged.get(run_name, 0) + 1

    def finish(self, run_name: str, history: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None) -> None:
        """Completes a run's events from its whole ``history`` (epoch records in order) and ``final``
        metrics: adds the final metrics, after rewriting the directory if this process did not write
        exactly these epochs."""
        if self.logged.get(run_name) != len(history):
            self.close(run_name)
            shutil.rmtree(self.directory(run_name), ignore_errors=True)
            self.logged[run_name] = 0
            for step, rec in enumerate(history, 1):
                self.epoch(run_name, step, rec["phase"], rec)
        w = self._writer(run_name)
        for k, v in _scalars(final or {}).items():
            w.add_scalar(f"final/{k}", v, max(len(history), 1))
        self.close(run_name)

    def has_events(self, run_name: str) -> bool:
        d = self.directory(run_name)
        return os.path.isdir(d) and any(f.startswith("events.out.tfevents") for f in os.listdir(d))

    def close(self, run_name: str | None = None) -> None:
        for name in ([run_name] if run_name else list(self._writers)):
            w = self._writers.pop(name, None)
            if w is not None:
                w.close()


def read_scalars(directory: str) -> dict[str, list[tuple[int, float]]]:
    """``tag -> [(step, value), ...]`` of every scalar in the event files of ``directory`` (one run), read
    with the record format's length and CRC checks (a reader for tests and notebooks; TensorBoard's own
    loader reads the same files)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c as masked

    out: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(os.listdir(directory)):
        if not name.startswith("events.out.tfevents"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
            if masked(header) != length_crc:
                raise ValueError(f"{name}: corrupt record length at byte {pos}")
            body = data[pos + 12:pos + 12 + length]
            (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            if masked(body) != body_crc:
                raise ValueError(f"{name}: corrupt record at byte {pos}")
            pos += 16 + length
            event = Event.FromString(body)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


class WandbLogs:
    """W&B runs of a grid (module docstring); ``project`` is required, the rest is passed to ``wandb.init``."""

    def __init__(self, project: str, root: str, entity: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(f"--wandb_project={project} needs the wandb package (pip install wandb); "
                              "without it, leave the flag out (TensorBoard logs are always written)") from None
        if not project.strip():
            raise ConfigError("--wandb_project must not be empty")
        self.wandb = wandb
        self.project = project
        self.root = root
        self.entity = entity

    def log_run(self, run_name: str, variant: str, history: Sequence[Mapping[str, Any]], final: Mapping[str, Any] | None,
                config: Mapping[str, Any] | None = None, failure: Mapping[str, Any] | None = None) -> None:
        run = self.wandb.init(project=self.project, entity=self.entity, name=run_name, group=variant,
                              config=dict(config or {}), dir=self.root, reinit=True)
        try:
            for step, rec in enumerate(history, 1):
                run.log({f"{rec['phase']}/{k}": v for k, v in _scalars(rec).items()}, step=step)
            run.summary.update({f"final/{k}": v for k, v in _scalars(final or {}).items()})
            if failure:
                run.summary["failure"] = str(failure.get("reason", failure))
        finally:
            run.finish(exit_code=1 if failure else 0)
