"""The examples file: (id, image, question[, answers]) records in JSON or JSON lines, read and checked once,
with each bad record named by its index and id; and the images they point at.

``answers`` (what the VLM scorer needs): the human answers of the question, a list of strings or of
``{"answer": ...}`` objects as in the VQA annotation files (10 for OKVQA and VQAv2). A demonstration shows
the most common of them, the first seen among equals, as the original does (it ignores any other answer
field)."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from typing import Any, Sequence

from leverjax.errors import DataError

ID_KEYS = ("id", "question_id", "image_id")
IMAGE_KEYS = ("image", "image_path", "img_path", "file_name")
QUESTION_KEYS = ("question",)
ANSWERS_KEY = "answers"


@dataclasses.dataclass(frozen=True)
class Example:
    """One example: its position in the examples file (= its global id and row), id, image, question and
    human answers (empty when the file has none)."""

    index: int
    id: int | str
    image: str
    question: str
    answers: tuple[str, ...] = ()

    @property
    def answer(self) -> str:
        """The answer a demonstration shows: the most common human answer, the first seen among equals."""
        return collections.Counter(self.answers).most_common(1)[0][0]


@dataclasses.dataclass(frozen=True)
class RecordFormat:
    """How records name their fields; ``None`` means detect from the first record."""

    id_key: str | None = None
    image_key: str | None = None
    question_key: str | None = None
    image_template: str | None = None
    image_root: str | None = None


def read_records(path: str) -> list[Any]:
    """Reads a JSON list, a JSON Lines file or a VQA questions file (``{"questions": [...]}``)."""
    if not os.path.isfile(path):
        raise DataError(f"examples file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _parse_jsonl(text, path)
    if isinstance(data, dict):
        questions = data.get("questions")
        return questions if isinstance(questions, list) else [data]
    if not isinstance(data, list):
        raise DataError(f"{path} holds a JSON {type(data).__name__}; expected a list of records")
    return data


def _parse_jsonl(text: str, path: str) -> list[Any]:
    """Parses one JSON value per non-blank line."""
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is neither JSON nor JSON Lines: line {lineno}: {e.msg}") from None
    return records


def _pick_key(record: dict, candidates: Sequence[str], override: str | None, what: str, flag: str) -> str:
    """The field name for ``what``: ``override`` or the first candidate present in ``record``."""
    if override:
        return override
    for key in candidates:
        if key in record:
            return key
    raise DataError(f"record 0 has none of the {what} fields {', '.join(candidates)}; name yours with --{flag}")


def describe_record(index: int, record_id: Any = None) -> str:
    """'record 3' or 'record 3 (id 1003)', for messages."""
    return f"record {index}" if record_id is None else f"record {index} (id {record_id!r})"


def _record_id(record: dict, index: int, key: str) -> int | str:
    """The record's id: an int or a non-empty string."""
    if key not in record:
        raise DataError(f"{describe_record(index)} has no id field '{key}'")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise DataError(f"{describe_record(index)} has id {value!r} in '{key}'; expected an int or a non-empty string")
    return value


def _record_question(record: dict, index: int, record_id: Any, key: str) -> str:
    """The record's question: a non-empty string."""
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{describe_record(index, record_id)} has no question: expected a non-empty string in '{key}'")
    return value


def _record_image(record: dict, index: int, record_id: Any, key: str | None, fmt: RecordFormat) -> str:
    """The record's image path, from its image field or from ``--image_template``, unresolved."""
    if fmt.image_template:
        try:
            value = fmt.image_template.format(**record)
        except KeyError as e:
            raise DataError(f"{describe_record(index, record_id)} has no field {e} used by --image_template") from None
        except (ValueError, IndexError) as e:
            raise DataError(f"--image_template does not fit {describe_record(index, record_id)}: {e}") from None
    else:
        value = record.get(key)
    if not isinstance(value, str) or not value:
        raise DataError(f"{describe_record(index, record_id)} has no image path: expected a non-empty string in '{key}'")
    return value


def _record_answers(record: dict, index: int, record_id: Any) -> tuple[str, ...]:
    """The record's human answers: a non-empty list of non-empty strings or ``{"answer": str}`` objects."""
    value = record.get(ANSWERS_KEY)
    where = describe_record(index, record_id)
    if not isinstance(value, list) or not value:
        raise DataError(f"{where} has no answers: expected a non-empty list in '{ANSWERS_KEY}' (the VQA "
                        "annotations' human answers)")
    out = []
    for j, a in enumerate(value):
        text = a.get("answer") if isinstance(a, dict) else a
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where} has answer {j} = {a!r} in '{ANSWERS_KEY}': expected a non-empty string or "
                            "an object with a non-empty 'answer'")
        out.append(text)
    return tuple(out)


def load_examples(path: str, fmt: RecordFormat = RecordFormat(), *, answers: bool = False) -> list[Example]:
    """Reads and checks the examples file; raises :class:`DataError` naming the first bad record.
    ``answers``: every record must carry its human answers (module docstring)."""
    records = read_records(path)
    if not records:
        raise DataError(f"examples file {path} holds no records")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{describe_record(index)} of {path} is a JSON {type(record).__name__}, not an object")
    first = records[0]
    id_key = _pick_key(first, ID_KEYS, fmt.id_key, "id", "id_key")
    question_key = _pick_key(first, QUESTION_KEYS, fmt.question_key, "question", "question_key")
    image_key = None if fmt.image_template else _pick_key(first, IMAGE_KEYS, fmt.image_key, "image", "image_key")
    root = os.path.abspath(fmt.image_root or os.path.dirname(os.path.abspath(path)))
    examples, seen = [], {}
    for index, record in enumerate(records):
        record_id = _record_id(record, index, id_key)
        if str(record_id) in seen:
            raise DataError(f"records {seen[str(record_id)]} and {index} have the same id {record_id!r}")
        seen[str(record_id)] = index
        question = _record_question(record, index, record_id, question_key)
        image = os.path.join(root, os.path.expanduser(_record_image(record, index, record_id, image_key, fmt)))
        human = _record_answers(record, index, record_id) if answers else ()
        examples.append(Example(index, record_id, os.path.normpath(image), question, human))
    return examples


def examples_digest(examples: Sequence[Example]) -> str:
    """A sha256 of the resolved examples (ids, image paths, questions, order)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.index, e.id, e.image, e.question]).encode())
    return h.hexdigest()


def load_image(path: str):
    """Opens and decodes an RGB image; returns ``(image, None)`` or ``(None, reason)``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return None, f"{type(e).__name__}: {e}"
    width, height = rgb.size
    if min(width, height) < 1 or max(width, height) / min(width, height) > 200:
        return None, f"unusable size {width}x{height} (aspect ratio above 200)"
    return rgb, None


def bad_image_message(example: Example, reason: str) -> str:
    """One sentence naming the example and its unreadable image."""
    return f"image of {describe_record(example.index, example.id)} cannot be read: {example.image} ({reason})"


def skipped_entry(example: Example, reason: str) -> dict:
    """How a skipped example is recorded in the shard json and in ``meta.skipped``."""
    return {"index": example.index, "id": example.id, "image": example.image, "error": reason}
