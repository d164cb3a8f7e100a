"""Throughput of the Qwen2.5-VL exporter with the tiny random model of the tests.

    python bench/bench_export_qwen.py [--n=64] [--image_sizes=56,448] [--batch_size=8]

Builds the tiny model (no download), writes ``--n`` random images per size, and times full
exports (image decoding, preprocessing, forward pass, pooling, shard and final writes) after the
model is loaded: one warm-up, then ``--repeats`` timed runs, median reported. The tiny model
measures the exporter's own overhead and the preprocessing cost; a real 3B model is bound by the
forward pass instead (see the README for an estimate).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from leverjax.tools import export_qwen as eq  # noqa: E402

flags.DEFINE_integer("n", 64, "Examples per image size.")
flags.DEFINE_list("image_sizes", ["56", "448"], "Square image sizes in pixels.")
flags.DEFINE_integer("batch_size", 8, "Examples per forward pass.")
flags.DEFINE_integer("num_workers", 2, "Image loading threads.")
flags.DEFINE_integer("repeats", 3, "Timed exports per image size (after one warm-up); the median is reported.")
FLAGS = flags.FLAGS


def time_export(encoder, examples: str, out: str) -> float:
    """Seconds for one export of ``examples`` with an already loaded encoder."""
    options = eq.ExportOptions(examples=examples, out=out, batch_size=FLAGS.batch_size, shard_size=256,
                               num_workers=FLAGS.num_workers, progress=False, overwrite=True)
    start = time.perf_counter()
    eq.export(options, lambda: encoder)
    return time.perf_counter() - start


def main(argv) -> None:
    """Builds the tiny model, then times one warm-up and one measured export per image size."""
    import fixtures_qwen
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = fixtures_qwen.save_tiny_qwen(os.path.join(tmp, "model"))
        encoder = eq.QwenEncoder(eq.EncoderOptions(model=model, device="cpu"))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
              f"batch {FLAGS.batch_size}, tiny Qwen2.5-VL (text width {fixtures_qwen.TEXT_WIDTH}, 2 layers)")
        for size in (int(s) for s in FLAGS.image_sizes):
            examples = fixtures_qwen.write_examples(os.path.join(tmp, f"data{size}"), FLAGS.n, size=size)
            out = os.path.join(tmp, f"emb{size}")
            time_export(encoder, examples, out)  # warm-up
            times = sorted(time_export(encoder, examples, out) for _ in range(FLAGS.repeats))
            median, best = statistics.median(times), times[0]
            tokens = (size // 28) ** 2
            print(f"{size}x{size} images ({tokens} image tokens): {FLAGS.n} examples, median {median:.2f} s "
                  f"= {FLAGS.n / median:.1f} examples/s (best {FLAGS.n / best:.1f})")


if __name__ == "__main__":
    app.run(main)
