"""Data: the schema-v1 .npz format, the synthetic data set and the Lever-Plus importer.

The schema names are imported eagerly; the synthetic data set and the importer load on first use
(so that ``python -m leverjax.data.synth`` and ``python -m leverjax.data.leverplus`` run cleanly).
"""
from leverjax.data.npz import (
    ORACLE_PREFIX,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    SPLITS,
    Dataset,
    dataset_from_arrays,
    dataset_to_arrays,
    filter_queries,
    load_npz,
    read_npz_arrays,
    save_npz,
    validate_arrays,
)

_LAZY = {
    "make_synthetic": "leverjax.data.synth",
    "oracle_accuracy": "leverjax.data.synth",
    "oracle_accuracy_np": "leverjax.data.synth",
    "default_dataset_path": "leverjax.data.synth",
    "load_or_make_default": "leverjax.data.synth",
    "convert_rl_data": "leverjax.data.leverplus",
    "load_embeddings": "leverjax.data.leverplus",
    "load_rl_json": "leverjax.data.leverplus",
}


def __getattr__(name: str):
    """Loads the synthetic-data and importer names on first access."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'leverjax.data' has no attribute '{name}'")


__all__ = [
    "ORACLE_PREFIX",
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "SPLITS",
    "Dataset",
    "dataset_from_arrays",
    "dataset_to_arrays",
    "filter_queries",
    "load_npz",
    "read_npz_arrays",
    "save_npz",
    "validate_arrays",
    *_LAZY,
]
