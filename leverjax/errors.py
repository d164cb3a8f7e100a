"""One exception type for every input error a user can make.

Everything a user can get wrong (a malformed .npz, an unknown experiment, a bad flag value, NaN in
embeddings, ...) raises :class:`LeverjaxError` with one sentence that names what is wrong and where.
Command-line entry points wrap their ``main`` in :func:`exit_on_error`, which prints that sentence
and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import functools
import sys


class LeverjaxError(Exception):
    """An error in what the user gave us (data, flags, config), not a bug in leverjax."""


class DataError(LeverjaxError):
    """A data file breaks a rule of the .npz schema or of an importer's input format."""


class ConfigError(LeverjaxError):
    """An unknown experiment, config field, flag or an invalid value for one."""


def exit_on_error(main):
    """Decorates a CLI ``main``: a :class:`LeverjaxError` becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except LeverjaxError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
