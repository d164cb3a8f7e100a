"""Exports Qwen2.5-VL embeddings of (image, question) examples: the table leverjax trains on.

Command::

    python -m leverjax.tools.export_qwen --model=LOCAL_MODEL_DIR --examples=FILE --out=PATH

Needs the optional dependencies (``pip install -r requirements-export.txt``); importing
``leverjax`` never imports torch or transformers.

Input (``--examples``): a JSON list of records, a JSON Lines file (one record per line), or a VQA
questions file (a JSON object with a ``"questions"`` list). Each record has

- an id: the first of ``id``, ``question_id``, ``image_id`` present in the first record (or the key
  named by ``--id_key``); ids are ints or strings and must be unique (compared as strings);
- an image path: the first of ``image``, ``image_path``, ``img_path``, ``file_name`` (or
  ``--image_key``), or a path built from the record by ``--image_template`` such as
  ``train2014/COCO_train2014_{image_id:012d}.jpg``; relative paths are resolved against
  ``--image_root``, by default the folder of the examples file;
- the question: ``question`` (or ``--question_key``), a non-empty string.

Embedding: each example becomes the prompt ``--prompt_template`` (by default Qwen's user turn
``<|im_start|>user\\n{image}{question}<|im_end|>\\n``, where ``{image}`` expands to the vision
tokens of the image). The final-layer hidden states of the language model (after its last norm)
are pooled (``--pooling``: ``mean`` over all tokens of the prompt, ``last`` token, or
``image_mean`` over the image tokens only), L2-normalised and stored as float32.

Output, for ``--out=PATH`` (a trailing ``.npy`` is optional):

- ``PATH.npy``: float32 ``[N, d]``; what ``python -m leverjax.data.leverplus --emb=PATH.npy`` reads;
- ``PATH.ids.json``: ``{"ids": [...], "example_index": [...], "meta": {...}}``: the record id and
  the position in the examples file of every row, and the provenance (encoder, model revision,
  pooling, dtype, prompt, image size limits, skipped examples, created_at, leverjax version).

Row order and global ids: row ``i`` of the table is record ``i`` of the examples file (its
0-based position). The Lever-Plus RL JSON refers to examples by that position (its "global ids" in
``candidate_pool_ids`` / ``pointer_global`` index the embedding table), so the examples file must
list the training set in the order Lever-Plus indexed it. That identity holds whenever no example
was skipped (``meta.rows_are_example_indices`` is true). With ``--on_bad_image=skip`` the rows of
skipped examples are left out, later rows move up, and only ``example_index`` maps rows back to
global ids: this is why ``stop`` is the default.

Resuming: the work is split into shards of ``--shard_size`` examples written atomically to
``PATH.shards/``. A re-run with the same settings keeps finished shards and computes only the
others, so a killed export continues where it stopped; a re-run with other settings (model,
pooling, prompt, dtype, image limits, examples) is refused instead of mixing rows. At the end the
shards are joined into the two outputs (each written to a temporary file and renamed) and the
shard folder is removed (``--keep_shards`` keeps it).

Images that cannot be read (missing, not an image, truncated) are reported with the example's
index, id and path. ``--on_bad_image=stop`` (default) ends the run with that report;
``--on_bad_image=skip`` leaves the example out (no row) and lists it in ``meta.skipped``. A row is
never silently zero: a row that is not finite or has zero norm is an error.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import importlib
import inspect
import json
import os
import re
import shutil
import sys
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from leverjax import __version__
from leverjax.errors import ConfigError, DataError, LeverjaxError
from leverjax.fileio import file_sha256
from leverjax.tools.examples import (
    Example, RecordFormat, bad_image_message, describe_record, examples_digest, load_examples, load_image,
    skipped_entry,
)
from leverjax.tools.shards import (
    OutputPaths, Shard, check_existing_output, output_paths, prepare_shard_folder, read_finished_shard, save_json,
    save_npy, write_shard,
)

POOLINGS = ("mean", "last", "image_mean")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BAD_IMAGE_POLICIES = ("stop", "skip")
DEFAULT_PROMPT = "<|im_start|>user\n{image}{question}<|im_end|>\n"
SUPPORTED_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")
INSTALL_HINT = "pip install -r requirements-export.txt"
SIDECAR_FORMAT = "leverjax.embedding_ids/1"


# ----------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# Pooling (torch tensors, no torch import needed)
# ----------------------------------------------------------------------------------------------


def pool_hidden_states(hidden, attention_mask, image_mask, pooling: str):
    """Pools final hidden states ``[B, T, D]`` to ``[B, D]`` over the real (non-padding) tokens.

    ``mean``: mean over tokens with ``attention_mask`` 1; ``last``: the last such token (any
    padding side); ``image_mean``: mean over the image tokens (``image_mask``) that are real.
    """
    real = attention_mask.bool()
    if pooling == "last":
        mask = real.long()
        last = (mask * mask.cumsum(-1)).argmax(-1)
        index = last[:, None, None].expand(-1, 1, hidden.shape[-1])
        return hidden.gather(1, index).squeeze(1)
    if pooling == "mean":
        weights = real
    elif pooling == "image_mean":
        weights = real & image_mask.bool()
    else:
        raise ConfigError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    weights = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def normalize_rows(rows: np.ndarray, examples: Sequence[Example]) -> np.ndarray:
    """L2-normalises pooled rows to float32; a non-finite or zero row is an error naming its example."""
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1)
    for row, norm, example in zip(rows, norms, examples):
        if not np.all(np.isfinite(row)) or not norm > 0:
            raise LeverjaxError(
                f"the embedding of {describe_record(example.index, example.id)} is not finite or is zero; "
                "with --dtype=float16 try --dtype=bfloat16 or float32"
            )
    return (rows / norms[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------


class Encoder(Protocol):
    """What the export loop needs from a model: CPU-side image preparation, then embedding."""

    def prepare_images(self, images: list) -> Any:
        """Turns PIL images into model inputs (thread-safe; runs in worker threads)."""

    def embed(self, prepared: Any, questions: list[str]) -> np.ndarray:
        """Pooled final hidden states ``[B, d]`` (not yet normalised)."""

    def describe(self) -> dict:
        """Provenance for ``meta`` (encoder, revision, pooling, dtype, ...)."""

    def fingerprint(self) -> dict:
        """The settings that change the rows; shards made with other settings are not reused."""


@dataclasses.dataclass(frozen=True)
class EncoderOptions:
    """How to load and run the model."""

    model: str
    pooling: str = "mean"
    device: str = "auto"
    dtype: str = "auto"
    min_pixels: int | None = None
    max_pixels: int | None = None
    prompt_template: str = DEFAULT_PROMPT
    attn_implementation: str | None = None


def import_export_deps():
    """Imports torch and transformers or explains how to install them."""
    missing = []
    modules = {}
    for name, package in (("torch", "torch"), ("transformers", "transformers"), ("PIL", "pillow")):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(package)
    if missing:
        raise LeverjaxError(f"the exporter needs {', '.join(missing)}: {INSTALL_HINT}")
    return modules["torch"], modules["transformers"]


def read_model_config(model_dir: str) -> dict:
    """The model's ``config.json``; the directory must be local and hold a Qwen-VL model."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isdir(model_dir) or not os.path.isfile(path):
        raise ConfigError(
            f"--model={model_dir} is not a local model directory with a config.json "
            "(download it first, e.g. huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct --local-dir DIR)"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"--model={model_dir} is a {config.get('model_type')!r} model; expected one of "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    return config


_SNAPSHOT = re.compile(r"models--([^/\\]+)--([^/\\]+)[/\\]snapshots[/\\]([0-9a-f]{40})")


def model_identity(model_dir: str, config: dict) -> dict:
    """Name, revision (commit) and config hash of a local model directory, as far as known.

    The revision comes from a Hugging Face cache path (``models--ORG--NAME/snapshots/COMMIT``) or
    from the metadata that ``huggingface-cli download --local-dir`` leaves in ``.cache/``.
    """
    path = os.path.realpath(model_dir)
    name, revision = None, None
    match = _SNAPSHOT.search(os.path.abspath(model_dir)) or _SNAPSHOT.search(path)
    if match:
        name, revision = f"{match.group(1)}/{match.group(2)}", match.group(3)
    metadata = os.path.join(model_dir, ".cache", "huggingface", "download", "config.json.metadata")
    if revision is None and os.path.isfile(metadata):
        with open(metadata, encoding="utf-8") as f:
            first = f.readline().strip()
        revision = first if re.fullmatch(r"[0-9a-f]{40}", first) else None
    declared = config.get("_name_or_path")
    if name is None:
        looks_like_path = not declared or os.path.isabs(declared) or declared.startswith(".")
        name = os.path.basename(os.path.normpath(path)) if looks_like_path else declared
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "encoder": name,
        "model_path": path,
        "revision": revision,
        "config_sha256": config_sha,
        "model_type": config.get("model_type"),
        "model_transformers_version": config.get("transformers_version"),
    }


def check_prompt_template(template: str) -> None:
    """A prompt template holds ``{image}`` and ``{question}`` exactly once each."""
    for field in ("{image}", "{question}"):
        if template.count(field) != 1:
            raise ConfigError(f"--prompt_template must contain {field} exactly once; got {template!r}")


def resolve_device(torch, device: str) -> str:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise ConfigError(f"--device={device} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device=cuda but torch sees no CUDA GPU")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` → bfloat16 on a GPU, float32 on the CPU."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype={dtype} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    return dtype


def _pixel_limits(image_processor) -> tuple[int | None, int | None]:
    """The (min, max) pixel counts the Qwen image processor resizes images into."""
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    low = get("shortest_edge") or getattr(image_processor, "min_pixels", None)
    high = get("longest_edge") or getattr(image_processor, "max_pixels", None)
    return low, high


def _dtype_keyword(transformers_version: str) -> str:
    """``from_pretrained`` takes ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    major, minor = (int(x) for x in re.findall(r"\d+", transformers_version)[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class QwenEncoder:
    """A Qwen2.5-VL model loaded from a local directory that embeds (image, question) pairs."""

    def __init__(self, options: EncoderOptions):
        if options.pooling not in POOLINGS:
            raise ConfigError(f"--pooling={options.pooling} is not one of {', '.join(POOLINGS)}")
        check_prompt_template(options.prompt_template)
        config = read_model_config(options.model)
        torch, transformers = import_export_deps()
        self.options = options
        self.torch = torch
        self.device = resolve_device(torch, options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.identity = model_identity(options.model, config)
        self.versions = {"transformers_version": transformers.__version__, "torch_version": torch.__version__}
        self._load(transformers, options)

    def _load(self, transformers, options: EncoderOptions) -> None:
        """Loads tokenizer, image processor and model with ``local_files_only=True``."""
        pixels = {k: v for k, v in (("min_pixels", options.min_pixels), ("max_pixels", options.max_pixels)) if v}
        dtype = getattr(self.torch, self.dtype)
        model_kw = {_dtype_keyword(transformers.__version__): dtype}
        if options.attn_implementation:
            model_kw["attn_implementation"] = options.attn_implementation
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(options.model, local_files_only=True)
            self.image_processor = transformers.AutoImageProcessor.from_pretrained(
                options.model, local_files_only=True, **pixels
            )
            model = transformers.AutoModelForImageTextToText.from_pretrained(
                options.model, local_files_only=True, **model_kw
            )
        except (OSError, ValueError, ImportError) as e:
            raise LeverjaxError(f"cannot load the model from {options.model}: {e}") from None
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        self.base = self.model.base_model
        config = self.model.config
        self.image_token_id = config.image_token_id
        self.merge = config.vision_config.spatial_merge_size
        tokens = self.tokenizer.convert_ids_to_tokens(
            [config.vision_start_token_id, config.image_token_id, config.vision_end_token_id]
        )
        self.vision_start, self.image_token, self.vision_end = tokens
        self.hidden_size = getattr(config, "text_config", config).hidden_size
        self._pass_token_types = "mm_token_type_ids" in inspect.signature(self.base.forward).parameters

    def prepare_images(self, images: list) -> Any:
        """Pixel values and grids for a batch of PIL images (CPU work, safe in worker threads)."""
        return self.image_processor(images=images, return_tensors="pt")

    def prompt(self, question: str, n_image_tokens: int) -> str:
        """The text of one example: the template with the image tokens and the question."""
        image = self.vision_start + self.image_token * n_image_tokens + self.vision_end
        return self.options.prompt_template.replace("{image}", image).replace("{question}", question)

    def embed(self, prepared: Any, questions: list[str]) -> np.ndarray:
        """Runs the model on one batch; returns the pooled final hidden states ``[B, d]`` in float32."""
        torch = self.torch
        grid = prepared["image_grid_thw"]
        counts = (grid.prod(-1) // self.merge**2).tolist()
        texts = [self.prompt(q, n) for q, n in zip(questions, counts)]
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        image_mask = tokens["input_ids"] == self.image_token_id
        if image_mask.sum(-1).tolist() != counts:
            raise LeverjaxError(
                f"the tokenizer of {self.options.model} does not keep {self.image_token!r} as one token; "
                "the model directory needs the tokenizer files saved with the model"
            )
        inputs = {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "pixel_values": prepared["pixel_values"],
            "image_grid_thw": grid,
        }
        if self._pass_token_types:
            inputs["mm_token_type_ids"] = image_mask.int()
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if hasattr(self.base, "rope_deltas"):
            self.base.rope_deltas = None  # never reuse positions from a previous batch
        with torch.inference_mode():
            out = self.base(**inputs, use_cache=False, return_dict=True)
            hidden = out.last_hidden_state.float()
            pooled = pool_hidden_states(hidden, inputs["attention_mask"], image_mask.to(self.device),
                                        self.options.pooling)
        return pooled.cpu().numpy()

    def fingerprint(self) -> dict:
        """Settings that change the rows (the device does not: a CPU run may finish on a GPU)."""
        low, high = _pixel_limits(self.image_processor)
        return {
            "model_path": self.identity["model_path"],
            "config_sha256": self.identity["config_sha256"],
            "pooling": self.options.pooling,
            "prompt_template": self.options.prompt_template,
            "image_processor": type(self.image_processor).__name__,
            "min_pixels": low,
            "max_pixels": high,
            "dtype": self.dtype,
        }

    def describe(self) -> dict:
        """Provenance for ``meta``."""
        attention = getattr(self.model.config, "_attn_implementation", None)
        return {**self.identity, **self.fingerprint(), "device": self.device, "attn_implementation": attention,
                "dim": self.hidden_size, **self.versions}


# ----------------------------------------------------------------------------------------------
# The export loop
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What to embed, where to write it, and how to batch and resume."""

    examples: str
    out: str
    records: RecordFormat = RecordFormat()
    batch_size: int = 8
    shard_size: int = 1024
    on_bad_image: str = "stop"
    num_workers: int = 2
    overwrite: bool = False
    keep_shards: bool = False
    progress: bool = True


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    table: str
    ids: str
    n_rows: int
    dim: int
    skipped: list[dict]
    reused_shards: int
    computed_shards: int


@dataclasses.dataclass
class _Batch:
    """One batch after image loading: the examples kept, those skipped, and the prepared images."""

    shard: int
    last_in_shard: bool
    kept: list[Example]
    skipped: list[dict]
    prepared: Any


def check_export_options(options: ExportOptions) -> None:
    """Rejects bad flag values with one sentence."""
    if options.on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"--on_bad_image={options.on_bad_image} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    for name in ("batch_size", "shard_size", "num_workers"):
        if getattr(options, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(options, name)}")


def check_images_exist(examples: Sequence[Example]) -> None:
    """Fails fast, before the model loads, when an image file is missing (used with ``stop``)."""
    missing = [e for e in examples if not os.path.isfile(e.image)]
    if missing:
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise DataError(bad_image_message(missing[0], "file not found") + more)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _prefetched(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``map(fn, items)`` computed ahead in ``workers`` threads, yielded in order."""
    ahead = 2 * workers
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _load_batch(encoder: Encoder, on_bad_image: str, report: Callable[[str], None], task) -> _Batch:
    """Loads a batch's images (worker thread): bad images stop the run or are skipped and reported."""
    shard, last_in_shard, examples = task
    kept, images, skipped = [], [], []
    for example in examples:
        image, reason = load_image(example.image)
        if image is None:
            if on_bad_image == "stop":
                raise DataError(bad_image_message(example, reason))
            report("skipped: " + bad_image_message(example, reason))
            skipped.append(skipped_entry(example, reason))
            continue
        kept.append(example)
        images.append(image)
    prepared = encoder.prepare_images(images) if images else None
    return _Batch(shard, last_in_shard, kept, skipped, prepared)


def _progress_bar(total: int, initial: int, enabled: bool):
    """A tqdm bar over examples, or a stand-in when disabled or tqdm is missing."""
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return _NoBar()
    return tqdm(total=total, initial=initial, unit="ex", desc="embedding", dynamic_ncols=True)


class _NoBar:
    """Does nothing, like a disabled progress bar."""

    def update(self, n: int) -> None:
        """Ignores progress."""

    def close(self) -> None:
        """Nothing to close."""

    @staticmethod
    def write(message: str) -> None:
        """Prints to stderr."""
        print(message, file=sys.stderr)


def _compute_shards(encoder: Encoder, todo: dict[int, list[Example]], options: ExportOptions, paths: OutputPaths,
                    bar, after_shard: Callable[[int], None] | None) -> None:
    """Embeds the unfinished shards batch by batch and writes each shard when it is complete."""
    tasks = []
    for k, shard_examples in todo.items():
        batches = list(_chunks(shard_examples, options.batch_size))
        tasks += [(k, i == len(batches) - 1, batch) for i, batch in enumerate(batches)]
    load = functools.partial(_load_batch, encoder, options.on_bad_image, bar.write)
    batches = _prefetched(load, tasks, options.num_workers)
    with contextlib.closing(batches):
        _consume(encoder, batches, paths, bar, after_shard)


def _consume(encoder: Encoder, batches: Iterator[_Batch], paths: OutputPaths, bar,
             after_shard: Callable[[int], None] | None) -> None:
    """Embeds loaded batches in order; writes a shard after its last batch."""
    parts: list[np.ndarray] = []
    kept: list[Example] = []
    skipped: list[dict] = []
    for batch in batches:
        if batch.kept:
            questions = [e.question for e in batch.kept]
            parts.append(normalize_rows(encoder.embed(batch.prepared, questions), batch.kept))
            kept += batch.kept
        skipped += batch.skipped
        bar.update(len(batch.kept) + len(batch.skipped))
        if batch.last_in_shard:
            rows = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            write_shard(paths, batch.shard, Shard(rows, [e.index for e in kept], [e.id for e in kept], skipped))
            if after_shard is not None:
                after_shard(batch.shard)
            parts, kept, skipped = [], [], []


def _join_shards(shards: list[Shard]) -> tuple[np.ndarray, list[int], list, list[dict]]:
    """Concatenates shards in order; shards with no rows (all skipped) contribute nothing."""
    with_rows = [s.rows for s in shards if s.example_index]
    if not with_rows:
        raise DataError("no example could be embedded: every image was skipped")
    dims = {r.shape[1] for r in with_rows}
    if len(dims) != 1:
        raise DataError(f"the shards have different widths {sorted(dims)}; delete the shard folder and re-run")
    table = np.concatenate(with_rows).astype(np.float32, copy=False)
    index = [i for s in shards for i in s.example_index]
    ids = [i for s in shards for i in s.ids]
    skipped = [x for s in shards for x in s.skipped]
    return table, index, ids, skipped


def _utc_now() -> str:
    """The current UTC time, ISO 8601, seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def export(options: ExportOptions, make_encoder: Callable[[], Encoder],
           after_shard: Callable[[int], None] | None = None) -> ExportResult:
    """Embeds every example of ``options.examples`` and writes ``PATH.npy`` and ``PATH.ids.json``.

    The examples, the output path and (with ``on_bad_image="stop"``) the image files' existence are
    checked before ``make_encoder`` loads the model. ``after_shard(k)`` is called after shard ``k`` is on disk.
    """
    check_export_options(options)
    examples = load_examples(options.examples, options.records)
    paths = output_paths(options.out)
    check_existing_output(paths, options.overwrite)
    if options.on_bad_image == "stop":
        check_images_exist(examples)
    encoder = make_encoder()
    os.makedirs(os.path.dirname(os.path.abspath(paths.table)), exist_ok=True)
    fingerprint = {"examples_sha256": examples_digest(examples), "n_examples": len(examples),
                   "shard_size": options.shard_size, **encoder.fingerprint()}
    prepare_shard_folder(paths, fingerprint)
    plan = list(_chunks(examples, options.shard_size))
    finished = {k: read_finished_shard(paths, k, part) for k, part in enumerate(plan)}
    finished = {k: s for k, s in finished.items() if s is not None}
    for k, shard in finished.items():
        if options.on_bad_image == "stop" and shard.skipped:
            entry = shard.skipped[0]
            raise DataError(
                f"shard {k} of the unfinished export skipped record {entry['index']} (id {entry['id']!r}, "
                f"{entry['image']}: {entry['error']}); finish it with --on_bad_image=skip"
            )
    todo = {k: list(part) for k, part in enumerate(plan) if k not in finished}
    bar = _progress_bar(len(examples), sum(len(plan[k]) for k in finished), options.progress)
    try:
        _compute_shards(encoder, todo, options, paths, bar, after_shard)
    finally:
        bar.close()
    shards = [read_finished_shard(paths, k, part) for k, part in enumerate(plan)]
    table, index, ids, skipped = _join_shards(shards)
    meta = {
        "source": "leverjax.tools.export_qwen",
        "leverjax_version": __version__,
        "created_at": _utc_now(),
        "examples": os.path.abspath(options.examples),
        "examples_file_sha256": file_sha256(options.examples),
        "n_examples": len(examples),
        "n_rows": int(table.shape[0]),
        "normalization": "l2",
        "rows_are_example_indices": index == list(range(len(examples))),
        "skipped": skipped,
        **encoder.describe(),
        "dim": int(table.shape[1]),
    }
    save_npy(paths.table, table)
    save_json(paths.ids, {"format": SIDECAR_FORMAT, "ids": ids, "example_index": index, "meta": meta})
    if not options.keep_shards:
        shutil.rmtree(paths.shards, ignore_errors=True)
    return ExportResult(paths.table, paths.ids, int(table.shape[0]), int(table.shape[1]), skipped,
                        reused_shards=len(finished), computed_shards=len(todo))


def read_export(path: str) -> tuple[np.ndarray, dict]:
    """Reads ``PATH.npy`` and its ``PATH.ids.json`` sidecar; returns (table, sidecar)."""
    paths = output_paths(path)
    for p in (paths.table, paths.ids):
        if not os.path.isfile(p):
            raise DataError(f"{p} does not exist")
    with open(paths.ids, encoding="utf-8") as f:
        sidecar = json.load(f)
    return np.load(paths.table, allow_pickle=False), sidecar


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def define_flags(flags) -> None:
    """Defines the command's absl flags (only when run as a command, so imports never clash)."""
    flags.DEFINE_string("model", None, "Local directory of a Qwen2.5-VL model (never downloaded).")
    flags.DEFINE_string("examples", None, "JSON list, JSON Lines or VQA questions file of examples.")
    flags.DEFINE_string("out", None, "Output path: writes PATH.npy, PATH.ids.json (and PATH.shards/ meanwhile).")
    flags.DEFINE_enum("pooling", "mean", list(POOLINGS), "How final hidden states become one vector.")
    flags.DEFINE_integer("batch_size", 8, "Examples per forward pass.")
    flags.DEFINE_integer("shard_size", 1024, "Examples per resumable shard.")
    flags.DEFINE_enum("device", "auto", list(DEVICES), "auto: cuda when available, else cpu.")
    flags.DEFINE_enum("dtype", "auto", list(DTYPES), "Compute dtype; auto: bfloat16 on cuda, float32 on cpu.")
    flags.DEFINE_enum("on_bad_image", "stop", list(BAD_IMAGE_POLICIES),
                      "stop: end the run naming the example; skip: leave it out (no row) and record it in meta.")
    flags.DEFINE_integer("min_pixels", None, "Smallest image area after resizing (default: the model's).")
    flags.DEFINE_integer("max_pixels", None, "Largest image area after resizing (default: the model's); "
                         "448*448 gives 256 image tokens.")
    flags.DEFINE_string("prompt_template", DEFAULT_PROMPT, "Prompt with {image} and {question}.")
    flags.DEFINE_string("attn_implementation", None,
                        "Attention kernels, e.g. sdpa or flash_attention_2 (default: the transformers default).")
    flags.DEFINE_string("image_root", None, "Folder for relative image paths (default: the examples file's).")
    flags.DEFINE_string("image_template", None,
                        "Image path built from record fields, e.g. train2014/COCO_train2014_{image_id:012d}.jpg.")
    flags.DEFINE_string("id_key", None, "Record field holding the id (default: id, question_id, image_id).")
    flags.DEFINE_string("image_key", None, "Record field holding the image path (default: image, image_path, ...).")
    flags.DEFINE_string("question_key", None, "Record field holding the question (default: question).")
    flags.DEFINE_integer("num_workers", 2, "Threads that load and preprocess images ahead of the model.")
    flags.DEFINE_bool("overwrite", False, "Export again when PATH.npy already exists.")
    flags.DEFINE_bool("keep_shards", False, "Keep PATH.shards/ after the final files are written.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    for name in ("model", "examples", "out"):
        flags.mark_flag_as_required(name)


def options_from_flags(values) -> tuple[EncoderOptions, ExportOptions]:
    """The two option sets from parsed flag values."""
    encoder = EncoderOptions(
        model=values.model, pooling=values.pooling, device=values.device, dtype=values.dtype,
        min_pixels=values.min_pixels, max_pixels=values.max_pixels, prompt_template=values.prompt_template,
        attn_implementation=values.attn_implementation,
    )
    records = RecordFormat(
        id_key=values.id_key, image_key=values.image_key, question_key=values.question_key,
        image_template=values.image_template, image_root=values.image_root,
    )
    export_options = ExportOptions(
        examples=values.examples, out=values.out, records=records, batch_size=values.batch_size,
        shard_size=values.shard_size, on_bad_image=values.on_bad_image, num_workers=values.num_workers,
        overwrite=values.overwrite, keep_shards=values.keep_shards, progress=values.progress,
    )
    return encoder, export_options


def summary(result: ExportResult) -> str:
    """What the command prints at the end."""
    text = f"wrote {result.n_rows} x {result.dim} float32 embeddings to {result.table} (ids and meta: {result.ids})"
    if result.reused_shards:
        text += f"; resumed: {result.reused_shards} shard(s) were already done"
    if result.skipped:
        ids = ", ".join(repr(s["id"]) for s in result.skipped[:10])
        text += f"; skipped {len(result.skipped)} example(s) with unreadable images (ids {ids}"
        text += ", ...)" if len(result.skipped) > 10 else ")"
        text += "; rows no longer equal example indices: map them with example_index in the ids file"
    return text


def main(argv: Sequence[str]) -> None:
    """Entry point of ``python -m leverjax.tools.export_qwen``."""
    from absl import flags

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])}")
    encoder_options, export_options = options_from_flags(flags.FLAGS)
    result = export(export_options, lambda: QwenEncoder(encoder_options))
    print(summary(result))


if __name__ == "__main__":
    from absl import flags as absl_flags

    from leverjax import command as command_lib

    define_flags(absl_flags)
    command_lib.run(main, command="python -m leverjax.tools.export_qwen",
                    about="Exports Qwen2.5-VL embeddings of (image, question) examples: the table leverjax trains on.")
