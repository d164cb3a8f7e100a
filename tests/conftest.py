import os
import sys

# Tests run on the CPU with deterministic float32 math; make the repo root importable.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
