"""CI cannot go quietly green: with LEVERJAX_REQUIRE_OPTIONAL set (.ci/run sets it), a test or a whole file
skipped for a missing package fails the run (tests/require_optional.py); unset, they are skips, and a skip for
another reason stays a skip either way. Checked on tiny test files run by pytest in a subprocess."""
import os
import subprocess
import sys

import pytest
import require_optional

TESTS = os.path.dirname(os.path.abspath(__file__))
MISSING = "leverjax_no_such_module_anywhere"
FILES = {
    "test_in_body.py": f"""
import pytest

def test_needs_the_package():
    pytest.importorskip({MISSING!r})

def test_plain():
    pass
""",
    "test_whole_file.py": f"""
import pytest

pytest.importorskip({MISSING!r})

def test_never_collected():
    pass
""",
    "test_other_skip.py": """
import pytest

@pytest.mark.skip(reason="needs a GPU")
def test_on_a_gpu():
    pass
""",
}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of the project's settings
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def run_pytest(folder, required: bool, *files):
    env = {k: v for k, v in os.environ.items() if k not in (require_optional.ENV, "PYTEST_ADDOPTS")}
    if required:
        env[require_optional.ENV] = "1"
    env["PYTHONPATH"] = os.pathsep.join([TESTS] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-p",
                           "require_optional", *(files or [str(folder)])], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_unset_a_missing_package_is_a_skip(folder):
    code, out = run_pytest(folder, False)
    assert code == 0, out
    assert "1 passed, 3 skipped" in out, out


def test_set_a_skip_for_a_missing_package_fails_and_other_skips_stay(folder):
    code, out = run_pytest(folder, True)
    assert code == 1, out
    assert "FAILED test_in_body.py::test_needs_the_package" in out and f"could not import '{MISSING}'" in out, out
    assert "FAILED test_whole_file.py (whole file skipped)" in out, out
    assert "1 failed, 1 passed, 2 skipped" in out, out  # the whole file and the GPU test
    assert "needs a GPU" in out, out


def test_set_a_whole_file_skipped_alone_fails_the_run(folder):
    code, out = run_pytest(folder, True, "test_whole_file.py", "test_other_skip.py")
    assert code == 1, out
    assert "FAILED test_whole_file.py (whole file skipped)" in out, out


@pytest.mark.parametrize("reason, missing", [
    ("could not import 'torch': No module named 'torch'", True),  # pytest.importorskip's own
    ("wandb is optional (pip install wandb)", True),
    ("transformers not installed", True),
    ("needs a GPU", False),
    ("needs 4 devices (torch.cuda has 1)", False),
    ("set LEVERPLUS_ORIGINAL to a checkout of github.com/yunsoft2019/Lever-Plus", False),
])
def test_which_reasons_count_as_a_missing_package(reason, missing):
    assert require_optional.is_missing_optional(reason) == missing
