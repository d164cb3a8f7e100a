import os
import sys
import tempfile

import pytest

# The tests' shared helpers (``original/``: transcriptions of the original) import from this folder, whatever
# the directory pytest was started from.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# With LEVERJAX_REQUIRE_OPTIONAL=1 (CI) a skip for a missing optional package (torch, transformers, pillow,
# wandb, tqdm) fails the run: its hooks, imported here so pytest finds them in this conftest.
from require_optional import *  # noqa: E402,F401,F403

# Tests run on the CPU with deterministic float32 math. leverjax itself is imported as the installed
# package (``pip install -r requirements.txt`` installs it editable).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests' programs are tiny and compile-bound: XLA's backend at -O0 compiles them about 40% faster
# (same HLO passes, so the same numbers; the subprocesses the tests start inherit it).
XLA_FLAGS = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
os.environ["XLA_FLAGS"] = XLA_FLAGS

import jax  # noqa: E402

# Identical programs compiled by different tests (or by the CLI subprocesses they start) are
# compiled once per test session.
_CACHE = os.environ.setdefault("LEVERJAX_CACHE_DIR", tempfile.mkdtemp(prefix="leverjax-xla-"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops the in-memory compiled programs after each test module. Every XLA CPU executable keeps its
    machine code mapped and the suite compiles thousands of them; holding all of them in one process, the
    suite died late (XLA segfaulted or aborted in a compile), most likely at the kernel's limit on memory
    mappings (65,530 here; one module alone reaches about 33k; a 31-group grid in one process met the same
    limit, measured, and the launcher now releases each group's programs the same way). With this it
    passes. The on-disk cache above keeps recompiling cheap."""
    yield
    jax.clear_caches()
