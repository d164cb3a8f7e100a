"""Where a result came from: the command, the code (git commit and whether the tree had changes), the
library versions, the devices, the data (path and SHA-256) and the date. Collected once per launch and
stored with the results, so a number in a report can be traced back to what produced it."""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from typing import Any, Sequence

import leverjax
from leverjax.fileio import file_sha256

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "matplotlib", "tensorboardX")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line(argv: Sequence[str] | None = None) -> str:
    """The process's command line, shell-quoted (``python`` + ``sys.argv``)."""
    return shlex.join(["python", *(sys.argv if argv is None else argv)])


def git_state(repo: str = REPO) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}``; dirty means tracked files differ from the commit."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "note": "not a git checkout (or git is not installed)"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version(), "leverjax": leverjax.__version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def devices() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    kinds = sorted({d.device_kind for d in devs})
    return {"platform": devs[0].platform if devs else None, "kind": ", ".join(kinds), "count": len(devs),
            "processes": jax.process_count()}


def data_record(path: str | None) -> dict[str, Any]:
    """``{"path", "sha256"}`` of a data file; ``path=None`` for a data set handed over in memory."""
    if path is None:
        return {"path": None, "sha256": None, "note": "data set passed in memory (run_grid(dataset=...))"}
    absolute = os.path.abspath(path)
    if not os.path.exists(absolute):
        return {"path": absolute, "sha256": None, "note": "file not found when the provenance was recorded"}
    return {"path": absolute, "sha256": file_sha256(absolute)}


def collect(*, command: str | None = None, data_paths: Sequence[str | None] = ()) -> dict[str, Any]:
    """Everything above as one JSON-ready dict."""
    return {
        "command": command or command_line(),
        "cwd": os.getcwd(),
        "git": git_state(),
        "versions": versions(),
        "devices": devices(),
        "data": [data_record(p) for p in dict.fromkeys(data_paths)],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(prov: dict[str, Any]) -> list[str]:
    """The provenance as Markdown bullet lines."""
    git = prov.get("git") or {}
    commit = git.get("commit")
    code = (f"git commit `{commit[:12]}`" + (" **with uncommitted changes** (dirty)" if git.get("dirty") else " (clean)")
            if commit else git.get("note", "unknown"))
    ver = prov.get("versions") or {}
    shown = ", ".join(f"{k} {v}" for k, v in ver.items() if v)
    dev = prov.get("devices") or {}
    lines = [f"- command: `{prov.get('command', '?')}` (in `{prov.get('cwd', '?')}`)",
             f"- code: {code}",
             f"- versions: {shown}",
             f"- devices: {dev.get('count', '?')} × {dev.get('kind', '?')} ({dev.get('platform', '?')}"
             + (f", {dev['processes']} processes" if dev.get("processes", 1) > 1 else "") + ")"]
    for d in prov.get("data") or []:
        if d.get("sha256"):
            lines.append(f"- data: `{d['path']}`, sha256 `{d['sha256']}`")
        else:
            lines.append(f"- data: {('`' + d['path'] + '`, ') if d.get('path') else ''}{d.get('note', '')}")
    lines.append(f"- date: {prov.get('date', '?')}")
    return lines
