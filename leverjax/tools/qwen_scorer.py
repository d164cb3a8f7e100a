"""The VLM scorer: Qwen2.5-VL answers a VQA question after in-context demonstrations, as the original's
inference does it (``icl_inference.py``, ``open_mmicl/interface/qwen2vl_interface.py``,
``configs/infer_model/qwen2.5_vl_3B.yaml``, ``configs/task/vqa.yaml``), and the answer gets its VQA
accuracy (:mod:`leverjax.data.vqa_accuracy`).

The prompt of demonstrations d_1..d_n and query q:

* a system message, :data:`SYSTEM_PROMPT` (the original's, which always speaks of four dialogues);
* one user message whose content is, for each of d_1..d_n then q, the example's image followed by its text,
  ``Question:<question> Short answer:<answer>`` for a demonstration (its most common human answer) and
  ``Question:<question> Short answer:`` for the query, each stripped of spaces at both ends; no separator
  (the configured ``<|endofchunk|>`` is not used on this path) and no assistant turns;
* the Qwen2.5-VL chat template with the generation prompt (:func:`render_prompt` writes it out; at load time
  it is checked against the model's own template when the model ships one).

Images are converted to RGB and resized as ``qwen_vl_utils.fetch_image`` does (:func:`smart_resize`: sides
multiples of 28, 4·28² to 16384·28² pixels, aspect kept; bicubic). Generation: 3 beams, at most 5 new
tokens, ``length_penalty`` 0, ``min_new_tokens`` 0, end of sequence and padding as the tokenizer's; the
settings the original leaves unset come from the model's ``generation_config.json`` as there. The new
tokens are decoded without special tokens and cut as the original cuts them
(:func:`~leverjax.data.vqa_accuracy.postprocess_generation`).

The original runs one prompt at a time; here ``batch_size`` prompts go together, padded on the left
(``--batch_size=1`` is the original's path exactly; batching changes bf16 rounding, rarely an answer).
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import hashlib
import math
import re
from typing import Sequence

import numpy as np

from leverjax.data.vqa_accuracy import postprocess_generation, vqa_accuracy
from leverjax.errors import ConfigError, DataError, LeverjaxError
from leverjax.tools import examples as examples_lib
from leverjax.tools.export_qwen import (
    _dtype_keyword,
    import_export_deps,
    model_identity,
    read_model_config,
    resolve_device,
    resolve_dtype,
)

SYSTEM_PROMPT = (
    "In the upcoming task, you will see four sets of dialogues, each containing two roles: user and assistant. "
    "The user is the questioner, who provides an image and asks a question based on it; the assistant is the "
    "responder, who answers according to the image and question provided by the user. Afterward, you will "
    "receive an image and a question from the user. Please act as the assistant and answer based on the four "
    "previous dialogue sets and your own knowledge. Strictly follow the answering format: if the examples use "
    "only one or two keywords, your reply must also use only one or two keywords; if the examples contain no "
    "more than three tokens, your reply must not exceed three tokens either."
)
TEMPLATE = "Question:<Q> Short answer:<A>"
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = 16384 * 28 * 28
MAX_RATIO = 200


@dataclasses.dataclass(frozen=True)
class GenerationOptions:
    """The original's generation settings (``configs/task/vqa.yaml``'s ``gen_args``)."""

    num_beams: int = 3
    max_new_tokens: int = 5
    length_penalty: float = 0.0
    min_new_tokens: int = 0


def sample_text(question: str, answer: str | None) -> str:
    """The text of one example: the template with its question and (a demonstration's) answer, as openicl
    fills it (tokens replaced in turn), stripped of spaces at both ends."""
    return TEMPLATE.replace("<Q>", str(question)).replace("<A>", "" if answer is None else str(answer)).strip(" ")


def prompt_messages(demos: Sequence[examples_lib.Example], query: examples_lib.Example, images: Sequence) -> list:
    """The chat messages of a prompt, as the original's interface builds them (``images``: one per example,
    demonstrations first, in prompt order)."""
    content = []
    texts = [sample_text(d.question, d.answer) for d in demos] + [sample_text(query.question, None)]
    for image, text in zip(images, texts):
        content.append({"type": "image", "image": image})
        if text:
            content.append({"type": "text", "text": text})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def render_prompt(demos: Sequence[examples_lib.Example], query: examples_lib.Example) -> str:
    """:func:`prompt_messages` through the Qwen2.5-VL chat template with the generation prompt: the text
    before each image's vision tokens are expanded."""
    body = "".join(VISION + text for text in [sample_text(d.question, d.answer) for d in demos]
                   + [sample_text(query.question, None)])
    return (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{body}<|im_end|>\n"
            "<|im_start|>assistant\n")


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``qwen_vl_utils``' resize: sides rounded to multiples of ``factor``, the pixel count brought into
    [min_pixels, max_pixels] with the aspect ratio kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise DataError(f"an image of {width}x{height} has an aspect ratio above {MAX_RATIO}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def fetch_image(example: examples_lib.Example):
    """The example's image, RGB and resized for the model; an unreadable one is a :class:`DataError`."""
    image, reason = examples_lib.load_image(example.image)
    if image is None:
        raise DataError(examples_lib.bad_image_message(example, reason))
    h, w = smart_resize(image.height, image.width)
    return image.resize((w, h))


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def relevance(prediction: str, answers: Sequence[str]) -> float:
    """The RL data's ``vqa_rel_score``: max over the human answers of max(token F1 over ``[a-z0-9]+`` words,
    ``difflib`` character similarity), both lower-cased and stripped; 0 for an empty answer."""
    pred = prediction.strip().lower()
    best = 0.0
    if not pred:
        return 0.0
    for answer in answers:
        gold = answer.strip().lower()
        p, g = _tokens(pred), _tokens(gold)
        common = sum(min(p.count(t), g.count(t)) for t in set(p))
        f1 = 0.0 if not common else 2 * common / (len(p) + len(g))
        best = max(best, f1, difflib.SequenceMatcher(None, pred, gold).ratio() if pred or gold else 0.0)
    return best


class QwenScorer:
    """Qwen2.5-VL from a local directory as a scorer backend (:class:`leverjax.data.scorer.Backend`) over the
    examples of ``examples`` (row i of the data = example i, as the exporter writes them; every example needs
    its human answers)."""

    def __init__(self, model: str, examples: Sequence[examples_lib.Example], *, device: str = "auto",
                 dtype: str = "auto", generation: GenerationOptions = GenerationOptions(),
                 attn_implementation: str | None = None, gt_prob: bool = False):
        config = read_model_config(model)
        torch, transformers = import_export_deps()
        missing = [e for e in examples if not e.answers]
        if missing:
            e = missing[0]
            raise DataError(f"{examples_lib.describe_record(e.index, e.id)} has no answers: the VLM scorer needs "
                            "every example's human answers")
        self.torch = torch
        self.examples = list(examples)
        self.generation = generation
        self.with_gt_prob = gt_prob
        self.device = resolve_device(torch, device)
        self.dtype = resolve_dtype(dtype, self.device)
        model_kw = {_dtype_keyword(transformers.__version__): getattr(torch, self.dtype)}
        if attn_implementation:
            model_kw["attn_implementation"] = attn_implementation
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model, local_files_only=True)
            self.image_processor = transformers.AutoImageProcessor.from_pretrained(model, local_files_only=True)
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                model, local_files_only=True, **model_kw).to(self.device).eval()
        except (OSError, ValueError, ImportError) as e:
            raise LeverjaxError(f"cannot load the model from {model}: {e}") from None
        self.tokenizer.padding_side = "left"
        self.merge = self.model.config.vision_config.spatial_merge_size
        self.template_checked = self._check_chat_template()
        answers = hashlib.sha256(repr([(e.index, e.answers) for e in self.examples]).encode()).hexdigest()
        self.identity = {
            **{k: v for k, v in model_identity(model, config).items() if k != "model_path"},
            "dtype": self.dtype, **dataclasses.asdict(generation), "gt_prob": gt_prob,
            "prompt_sha256": hashlib.sha256((SYSTEM_PROMPT + TEMPLATE).encode()).hexdigest()[:16],
            "examples_sha256": examples_lib.examples_digest(self.examples)[:16], "answers_sha256": answers[:16],
        }

    def _check_chat_template(self) -> bool:
        """Renders a probe prompt through the model's own chat template, when it has one, and refuses a model
        whose template differs from :func:`render_prompt`'s; False when the model ships no template."""
        if not getattr(self.tokenizer, "chat_template", None):
            return False
        probe = [examples_lib.Example(0, 0, "", "what is it?", ("a dog",)), examples_lib.Example(1, 1, "", "and?")]
        ours = render_prompt(probe[:1], probe[1])
        theirs = self.tokenizer.apply_chat_template(prompt_messages(probe[:1], probe[1], [None, None]),
                                                    tokenize=False, add_generation_prompt=True)
        if theirs != ours:
            raise ConfigError("the model's chat template renders the original's prompt differently from "
                              f"Qwen2.5-VL's:\n{theirs!r}\nexpected\n{ours!r}")
        return True

    def example(self, row: int) -> examples_lib.Example:
        if not 0 <= row < len(self.examples):
            raise DataError(f"row {row} has no example: the examples file holds {len(self.examples)} records "
                            "(row i of the data is record i)")
        return self.examples[row]

    def prompts(self, query_rows, demo_rows) -> tuple[list[str], list]:
        """The texts (vision tokens expanded) and images, in order, of a batch of prompts."""
        texts, images = [], []
        for q, ds in zip(np.asarray(query_rows).tolist(), np.asarray(demo_rows).tolist()):
            demos, query = [self.example(d) for d in ds], self.example(q)
            images += [fetch_image(e) for e in (*demos, query)]
            texts.append(render_prompt(demos, query))
        return texts, images

    def _expand(self, texts: list[str], images: list) -> tuple[list[str], dict]:
        """``texts`` (one ``<|image_pad|>`` per image) with each image's token expanded to its count, as the
        processor does, and the images' pixel values and grids."""
        vision = self.image_processor(images=images, return_tensors="pt")
        counts = iter((vision["image_grid_thw"].prod(-1) // self.merge ** 2).tolist())
        return [re.sub(re.escape("<|image_pad|>"), lambda _: "<|image_pad|>" * next(counts), t) for t in texts], vision

    def _inputs(self, texts: list[str], images: list, expanded: tuple[list[str], dict] | None = None) -> dict:
        """Model inputs of ``texts`` and their ``images`` in order (or of their :meth:`_expand` result),
        padded on the left, on the device."""
        expanded, vision = expanded or self._expand(texts, images)
        inputs = {**self.tokenizer(expanded, padding=True, return_tensors="pt"), **vision}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def answer_probabilities(self, text: str, images: list, answers: Sequence[str]) -> list[float]:
        """Per answer, the model's teacher-forced probability of its tokens after the prompt ``text`` (which
        ends with the generation prompt), length-normalised: exp(mean log p) over the answer's tokens."""
        torch = self.torch
        texts = [text + a for a in answers]
        expanded = self._expand(texts, list(images) * len(answers))  # one image-processor pass serves the prompt's length too
        prompt = expanded[0][0][:len(expanded[0][0]) - len(answers[0])]  # the expanded prompt the answers follow
        prompt_len = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        inputs = self._inputs(texts, [], expanded)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, inputs["input_ids"][:, 1:, None])[..., 0]
        out = []
        for j in range(len(answers)):
            n_answer = int(inputs["attention_mask"][j].sum()) - prompt_len  # left padding: the answer ends the row
            out.append(float(torch.exp(logp[j, -n_answer:].mean())) if n_answer > 0 else math.nan)
        return out

    def gt_prob(self, text: str, images: list, human: Sequence[str]) -> float:
        """The ground truth's probability mass: Σ over the distinct human answers (cut as generations are) of
        min(count / 3, 1) · :meth:`answer_probabilities` (can exceed 1, as the RL data's ``vqa_gt_prob``)."""
        counts = collections.Counter(postprocess_generation(a) for a in human)
        answers = [a for a in counts if a]
        probs = self.answer_probabilities(text, images, answers) if answers else []
        return float(sum(min(counts[a] / 3.0, 1.0) * p for a, p in zip(answers, probs)))

    def score_batch(self, query_rows, demo_rows) -> list[dict]:
        """One generation per prompt: ``answer``, ``acc`` (VQA accuracy), ``correct``, ``rel``; ``gt_prob``
        when the scorer was made with ``gt_prob=True`` (else NaN)."""
        torch = self.torch
        texts, images = self.prompts(query_rows, demo_rows)
        inputs = self._inputs(texts, images)
        g = self.generation
        with torch.inference_mode():
            out = self.model.generate(**inputs, num_beams=g.num_beams, max_new_tokens=g.max_new_tokens,
                                      length_penalty=g.length_penalty, min_new_tokens=g.min_new_tokens,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        results = []
        per_prompt = np.asarray(demo_rows).shape[1] + 1
        for i, (q, text) in enumerate(zip(np.asarray(query_rows).tolist(), decoded)):
            answer = postprocess_generation(text)
            human = self.example(q).answers
            acc = vqa_accuracy(answer, human)
            gt = self.gt_prob(texts[i], images[i * per_prompt:(i + 1) * per_prompt], human) \
                if self.with_gt_prob else math.nan
            results.append({"answer": answer, "acc": acc, "correct": float(acc > 0), "gt_prob": gt,
                            "rel": relevance(answer, human)})
        return results
