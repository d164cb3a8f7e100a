import os
import tempfile

# Tests run on the CPU with deterministic float32 math. leverjax itself is imported as the installed
# package (``pip install -r requirements.txt`` installs it editable).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Identical programs compiled by different tests (or by the CLI subprocesses they start) are
# compiled once per test session.
_CACHE = os.environ.setdefault("LEVERJAX_CACHE_DIR", tempfile.mkdtemp(prefix="leverjax-xla-"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
