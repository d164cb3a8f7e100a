"""Data: the schema-v1 .npz format, the synthetic data set and the Lever-Plus importer."""
from leverjax.data.npz import (
    ORACLE_PREFIX,
    REQUIRED_KEYS,
    SCHEMA_VERSION,
    SPLITS,
    Dataset,
    dataset_from_arrays,
    dataset_to_arrays,
    device_arrays,
    filter_queries,
    load_npz,
    read_npz_arrays,
    save_npz,
    validate_arrays,
)

__all__ = [
    "ORACLE_PREFIX",
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "SPLITS",
    "Dataset",
    "dataset_from_arrays",
    "dataset_to_arrays",
    "device_arrays",
    "filter_queries",
    "load_npz",
    "read_npz_arrays",
    "save_npz",
    "validate_arrays",
]
