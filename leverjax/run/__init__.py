"""Running the core: the experiment registry, grid expansion, the training engine, checkpoints, results
files, progress and console tables, worker processes, several processes, tracking and provenance.
Imports :mod:`leverjax.core` and :mod:`leverjax.data`, never :mod:`leverjax.report` or :mod:`leverjax.tools`."""
