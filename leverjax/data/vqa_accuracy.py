"""The standard VQA accuracy of one answer against the human answers, as the original's evaluation
(``open_mmicl/metrics/vqa_metrics.py``, a copy of the official VQA evaluation) computes it.

For a question with human answers a_1..a_10 and a predicted answer p:

1. Newlines and tabs become spaces and both ends are stripped, in p and every a_i.
2. p and every a_i are normalised: first the punctuation (:func:`normalize_punctuation`), then number
   words, articles and contractions (:func:`normalize_digits_articles`, which also lower-cases). The
   original does this always; the official evaluation only when the human answers are not all the same
   (then ``"Yes"`` against ten ``"yes"`` scores 0): ``official_rule=True`` gives that.
3. accuracy = mean over i of min(#{j ≠ i : a_j = p} / 3, 1): the leave-one-out average over the ten
   subsets of nine answers (one entry left out at a time, even among equal strings), so 0, 0.3, 0.6,
   0.9 or 1.0 with ten answers.

No maintained package on PyPI carries this evaluation on its own (it lives as a script in the VQA
challenge's repository, which the VQA code bases copy); this module is a transcription of its rules,
tested against the official evaluation's cases in ``tests/data/test_vqa_accuracy.py``.
"""
from __future__ import annotations

import re
from typing import Sequence

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# The official expressions, kept as written: ``(?!<=\d)`` is a negative look-ahead for the text "<=" and a
# digit (a mistyped look-behind), so a period is removed unless a digit follows it.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official call passes re.UNICODE where ``sub`` takes its count: at most 32 periods are removed.
_PERIOD_COUNT = int(re.UNICODE)


def normalize_punctuation(text: str) -> str:
    """Punctuation removed (next to a space, or anywhere when the text has a digit-comma-digit) or replaced
    by a space (elsewhere); periods not followed by a digit removed."""
    out = text
    glued = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or glued:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def normalize_digits_articles(text: str) -> str:
    """Lower-cased words, number words as digits, articles dropped, contractions given their apostrophes."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def postprocess_generation(text: str) -> str:
    """The answer in a VQA generation, as the original cuts it: the text before the first ``Question``,
    ``Answer`` or ``Short`` (case-sensitive), then before the first ``", "``; not stripped (the accuracy
    strips)."""
    return re.split(", ", re.split("Question|Answer|Short", text, maxsplit=1)[0], maxsplit=1)[0]


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_accuracy(prediction: str, answers: Sequence[str], *, official_rule: bool = False) -> float:
    """The VQA accuracy of ``prediction`` against the human ``answers`` (module docstring), in [0, 1].
    ``official_rule``: normalise only when the human answers differ, as the official evaluation does."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    gts = [_clean(a) for a in answers]
    pred = _clean(prediction)
    if not official_rule or len(set(gts)) > 1:
        gts = [normalize_digits_articles(normalize_punctuation(a)) for a in gts]
        pred = normalize_digits_articles(normalize_punctuation(pred))
    matches = [g == pred for g in gts]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(gts)
