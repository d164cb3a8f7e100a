"""A tiny randomly initialised Qwen2.5-VL saved to a local directory, built without any download.

The directory looks like a real Qwen2.5-VL checkpoint to ``leverjax.tools.export_qwen``: ``config.json``
and safetensors weights, a fast tokenizer that knows the Qwen special tokens (``<|im_start|>``,
``<|vision_start|>``, ``<|image_pad|>``, ...), and a ``preprocessor_config.json`` written like the
one of ``Qwen/Qwen2.5-VL-3B-Instruct``. Sizes are tiny (text width 32, 2 layers; vision width 16,
2 blocks) so building, saving and running it takes about a second on a CPU.

Needs torch, transformers and pillow (``requirements-export.txt``).
"""
from __future__ import annotations

import json
import os

import numpy as np

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
WORDS = (
    "[UNK] user assistant system what which who where how many is are the a an of on in to there "
    "color colour dog cat car bus red blue green man woman sign this that picture ? ."
).split()
TEXT_WIDTH = 32

PREPROCESSOR_CONFIG = {
    "min_pixels": 56 * 56,
    "max_pixels": 28 * 28 * 1280,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


# Qwen2.5-VL-Instruct's chat template (its ``chat_template.json``), so that the tiny model ships one as the real
# model does.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    """A word-level fast tokenizer with the Qwen special tokens, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(tokenizer):
    """A Qwen2.5-VL config with tiny text and vision towers whose token ids match ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
    )
    vision = dict(
        depth=2,
        hidden_size=16,
        intermediate_size=32,
        num_heads=2,
        out_hidden_size=TEXT_WIDTH,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def save_tiny_qwen(directory: str, seed: int = 0) -> str:
    """Builds the tiny model with random weights (``seed``) and saves it under ``directory``."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer)).eval()
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
        json.dump(PREPROCESSOR_CONFIG, f, indent=2)
    return directory


def write_images(directory: str, n: int, size: int = 56, seed: int = 0) -> list[str]:
    """Writes ``n`` random RGB PNGs of ``size``² pixels; returns their file names (relative)."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"img_{i:03d}.png"
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(directory, name))
        names.append(name)
    return names


QUESTIONS = (
    "what color is the dog ?",
    "how many cars are there ?",
    "is this a bus ?",
    "what is on the sign ?",
    "who is in the picture ?",
    "which colour is the cat ?",
    "where is the man ?",
    "what is the woman on ?",
)


ANSWERS = ("red", "two", "yes", "dog", "man", "blue", "car", "bus")


def write_examples(directory: str, n: int, size: int = 56, image_dir: str = "images", images: int | None = None,
                   answers: bool = False) -> str:
    """Writes ``n`` OKVQA-style records (question_id, image_id, image, question) to examples.json.

    Image paths are relative to ``directory``; question ``i`` is ``QUESTIONS[i % len(QUESTIONS)]``. ``images``:
    write only that many images, record i showing image ``i % images``; ``answers``: ten human answers each.
    """
    names = write_images(os.path.join(directory, image_dir), images or n, size=size)
    names = [names[i % len(names)] for i in range(n)]
    records = [
        {
            "question_id": 1000 + i,
            "image_id": 500 + i // 2,
            "image": f"{image_dir}/{name}",
            "question": QUESTIONS[i % len(QUESTIONS)],
            **({"answers": [{"answer": ANSWERS[(i + j // 4) % len(ANSWERS)], "answer_id": j + 1} for j in range(10)]}
               if answers else {}),
        }
        for i, name in enumerate(names)
    ]
    path = os.path.join(directory, "examples.json")
    with open(path, "w") as f:
        json.dump(records, f)
    return path
