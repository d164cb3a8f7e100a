"""A pytest plugin (loaded by tests/conftest.py): with ``LEVERJAX_REQUIRE_OPTIONAL=1`` (as .ci/run sets it) a
test skipped because an optional package is missing fails instead, so CI cannot go green by skipping what
it was installed to test.

A skip counts as "missing optional package" when its reason is pytest.importorskip's own ("could not
import 'torch': ...") or says so ("No module named ...", "... not installed", "pip install ...", or an
optional package named as optional/missing: "wandb is optional (pip install wandb)"). Other skips (no GPU,
a checkout of the original not given) stay skips.

* a test that skips (importorskip in its body, a skipif/skip mark) is reported as failed;
* a whole file skipped at collection (a module-level importorskip) cannot be made a failed collection
  without pytest stopping the session, so it stays counted as skipped, is listed in a section of the
  summary, and the session's exit status is made 1 (tests failed).
"""
from __future__ import annotations

import os
import re

import pytest

ENV = "LEVERJAX_REQUIRE_OPTIONAL"
OPTIONAL = ("torch", "transformers", "PIL", "pillow", "wandb", "tqdm")
_MISSING = re.compile(
    r"could not import|no module named|not installed|\bpip install\b"
    r"|\b(?:" + "|".join(OPTIONAL) + r")\b[^.;]*\b(?:optional|missing|unavailable|absent)\b", re.IGNORECASE)

__all__ = ["pytest_sessionstart", "pytest_runtest_makereport", "pytest_collectreport", "pytest_terminal_summary",
           "pytest_sessionfinish"]

_skipped_files: list[tuple[str, str]] = []  # (node id, reason) of the files skipped at collection


def required() -> bool:
    """Whether skips for missing optional packages fail (``LEVERJAX_REQUIRE_OPTIONAL`` set, not 0/false)."""
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_missing_optional(reason: str) -> bool:
    return bool(_MISSING.search(reason))


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: <reason>")
        longrepr = longrepr[2]
    text = str(longrepr or "")
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def pytest_sessionstart(session):
    _skipped_files.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if required() and report.skipped and not hasattr(report, "wasxfail"):
        reason = skip_reason(report)
        if is_missing_optional(reason):
            report.outcome = "failed"
            report.longrepr = (f"{ENV}={os.environ[ENV]}: skipped for a missing optional package, which this "
                               f"run must have: {reason}")
    return report


def pytest_collectreport(report):
    if required() and report.skipped:
        reason = skip_reason(report)
        if is_missing_optional(reason):
            _skipped_files.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter):
    if _skipped_files:
        terminalreporter.section(f"files skipped for a missing optional package ({ENV} is set: the run fails)",
                                 sep="=", red=True, bold=True)
        for nodeid, reason in _skipped_files:
            terminalreporter.line(f"FAILED {nodeid} (whole file skipped): {reason}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    if _skipped_files and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
