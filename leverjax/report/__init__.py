"""The report of a results directory: loading, estimates, Markdown, plots, metric validity, calibration.
Reads what :mod:`leverjax.run` wrote; ``python -m leverjax.report DIR`` regenerates ``report.md``."""
