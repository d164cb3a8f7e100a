"""The algorithm: the run configuration, the selector network, the losses, advantages and rewards, the
optimiser, the training phases, the offline evaluation and the reference selections. Pure functions of
arrays; no file or console I/O. Imports only :mod:`leverjax.data` and the shared base."""
