"""Cost of the VLM scorer per 1,000 prompts with the tiny random Qwen2.5-VL of the tests, on this machine.

    python bench/bench_vlm_scorer.py [--prompts=200] [--shots=1,2,4] [--image_size=56] [--batch_size=8]

Builds the tiny model (no download) and an examples file with answers, then times
``QwenScorer.score_batch`` over ``--prompts`` random (query, demonstrations) prompts per shot count, after
one warm-up batch: image loading and resizing, the original's prompt, preprocessing, 3-beam generation of
at most 5 tokens, post-processing and VQA accuracy. Prints seconds per 1,000 prompts per shot count. The
tiny model measures the scorer's own overhead and the preprocessing; a real 3B model is bound by its
forward passes instead (docs/results/vlm-eval.md gives an estimate for one H100).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))

flags.DEFINE_integer("prompts", 200, "Prompts timed per shot count.")
flags.DEFINE_list("shots", ["1", "2", "4"], "Demonstrations per prompt.")
flags.DEFINE_integer("image_size", 56, "Square image size in pixels.")
flags.DEFINE_integer("batch_size", 8, "Prompts per generate call.")
flags.DEFINE_integer("examples", 64, "Examples in the file (prompts draw from them).")
FLAGS = flags.FLAGS


def main(_):
    import fixtures_qwen
    import torch

    from leverjax.tools import examples as examples_lib
    from leverjax.tools.qwen_scorer import QwenScorer

    torch.set_num_threads(os.cpu_count() or 1)
    root = tempfile.mkdtemp(prefix="bench-vlm-")
    model = fixtures_qwen.save_tiny_qwen(os.path.join(root, "model"))
    path = fixtures_qwen.write_examples(os.path.join(root, "ex"), FLAGS.examples, size=FLAGS.image_size,
                                       answers=True)
    scorer = QwenScorer(model, examples_lib.load_examples(path, answers=True), device="cpu")
    rng = np.random.default_rng(0)
    print(f"tiny Qwen2.5-VL on the CPU ({os.cpu_count()} cores, torch {torch.__version__}), images "
          f"{FLAGS.image_size}², batch {FLAGS.batch_size}")
    for shots in map(int, FLAGS.shots):
        q = rng.integers(0, FLAGS.examples, FLAGS.prompts)
        d = np.stack([rng.choice(FLAGS.examples, shots, replace=False) for _ in range(FLAGS.prompts)])
        scorer.score_batch(q[:FLAGS.batch_size], d[:FLAGS.batch_size])  # warm-up
        start = time.perf_counter()
        for i in range(0, FLAGS.prompts, FLAGS.batch_size):
            scorer.score_batch(q[i:i + FLAGS.batch_size], d[i:i + FLAGS.batch_size])
        seconds = time.perf_counter() - start
        print(f"{shots} shot(s): {1000 * seconds / FLAGS.prompts:7.1f} s per 1,000 prompts")


if __name__ == "__main__":
    app.run(main)
