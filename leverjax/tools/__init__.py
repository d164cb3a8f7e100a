"""The edges that need PyTorch or transformers: interop with the original's checkpoints, scoring a data
set with a selector, and the Qwen2.5-VL embedding exporter. Nothing in :mod:`leverjax.core` or
:mod:`leverjax.run` imports them."""
