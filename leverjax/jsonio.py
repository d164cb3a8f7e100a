"""Strict JSON for every file leverjax writes: no bare ``NaN`` or ``Infinity`` tokens.

Python's ``json`` writes NaN and ±inf as bare tokens that strict parsers (JavaScript, jq, most other
languages) reject. :func:`strict_json` turns them into ``null``; :func:`dumps_strict` serialises with
``allow_nan=False``, so anything non-finite that slipped through is an error, not a broken file.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: arrays and NumPy scalars become lists and numbers, and every
    non-finite float (NaN, ±inf) becomes ``None`` (JSON ``null``), so the output is strict JSON.

    Where a value can be undefined, the writer states why beside it (a ``*_reason`` or ``undefined``
    field); this function only guarantees that no bare ``NaN``/``Infinity`` token is ever written.
    """
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, (bool, str, int)) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return strict_json(obj.item())
    if hasattr(obj, "tolist"):  # NumPy and jax arrays
        return strict_json(np.asarray(obj).tolist())
    return obj  # anything else: json.dumps serialises it with its ``default`` or raises TypeError


def dumps_strict(obj: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`strict_json` (``obj``) with ``allow_nan=False``: strict JSON or an error."""
    return json.dumps(strict_json(obj), allow_nan=False, **kwargs)
