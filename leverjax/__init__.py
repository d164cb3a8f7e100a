"""leverjax: a fast JAX/Flax reimplementation of the Lever-Plus in-context-example selector."""

__version__ = "0.2.0"
