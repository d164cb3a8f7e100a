"""Every module command line (``python -m leverjax.<module>``) answers ``--help`` the same way and turns a bad
flag, a bad value or a stray argument into one line ``error: ...`` with exit status 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

# each module with one of its own flags, which its --help must list
COMMANDS = {"leverjax.data.synth": "--preset", "leverjax.data.leverplus": "--out", "leverjax.data.calibrate": "--preset",
            "leverjax.tools.score": "--checkpoint", "leverjax.tools.interop": "--out",
            "leverjax.tools.export_qwen": "--out", "leverjax.report": "--baseline",
            "leverjax.vlm_eval": "--scorer", "leverjax.data.generate": "--mix", "leverjax.data.diagnose": "--split"}


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_and_one_line_errors(module):
    shown = run(module, "--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: python -m {module}") and f"  {COMMANDS[module]}:" in shown.stdout
    for bad in (["--no_such_flag=1"], ["--out=x", "stray", "arguments", "here"]):
        res = run(module, *bad)
        assert res.returncode == 2, (bad, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (bad, res.stderr)


def test_a_bad_value_names_the_flag():
    res = run("leverjax.data.synth", "--out=x.npz", "--seed=abc")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: flag --seed=abc"), res.stderr
