"""One way to run a module's command line (``python -m leverjax.<module>``): absl flags, a ``--help`` that
lists the module's own flags, orbax and absl quiet below warnings, and every input error as one line
``error: ...`` with exit status 2 (a bad flag value, an unknown flag, a stray argument, a
:class:`~leverjax.errors.LeverjaxError`) instead of a traceback."""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from leverjax.errors import ConfigError, exit_on_error

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


def run(main: Callable[[Sequence[str]], None], *, command: str, about: str, positional: Sequence[str] = ()) -> None:
    """Runs ``main(argv)`` under absl. ``command``: how the user types it (``python -m leverjax.tools.score``);
    ``about``: one line for ``--help``; ``positional``: names of the arguments ``main`` takes besides flags
    (more are refused)."""
    from absl import app, flags, logging

    def parse(argv: list[str]) -> list[str]:
        if any(a in HELP_FLAGS for a in argv[1:]):
            args = "".join(f" {p.upper()}" for p in positional)
            module = main.__module__  # where the flags were defined: the module run as __main__, or the one it calls
            listed = flags.FLAGS.main_module_help() if module == "__main__" else flags.FLAGS.module_help(module)
            print(f"usage: {command}{args} [--flag=value ...]\n\n{about}\n\n{listed}")
            sys.exit(0)
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
            print(f"error: {message} (see {command} --help)", file=sys.stderr)
            sys.exit(2)

    @exit_on_error
    def checked(argv: Sequence[str]) -> None:
        logging.set_verbosity(logging.WARNING)
        if len(argv) - 1 > len(positional):
            raise ConfigError(f"unexpected arguments: {' '.join(argv[1 + len(positional):])}; flags look like "
                              f"--name=value (see {command} --help)")
        main(argv)

    app.run(checked, flags_parser=parse)
