"""The VQA accuracy against hand-computed cases and the official evaluation's normalisation rules, and the
original's cut of a generation."""
import pytest

from leverjax.data.vqa_accuracy import (
    normalize_digits_articles,
    normalize_punctuation,
    postprocess_generation,
    vqa_accuracy,
)


def answers(matching: int, answer: str = "red", other: str = "blue") -> list[str]:
    return [answer] * matching + [other] * (10 - matching)


@pytest.mark.parametrize("matching, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_average_by_hand(matching, expected):
    # m matches: the 10 − m subsets without a match keep m, the m with one keep m − 1; each gives min(k/3, 1)
    assert vqa_accuracy("red", answers(matching)) == pytest.approx(expected)


def test_fewer_answers_average_over_their_own_subsets():
    assert vqa_accuracy("cat", ["cat", "dog", "cat"]) == pytest.approx((1 / 3 + 2 / 3 + 1 / 3) / 3)


@pytest.mark.parametrize("prediction, truth", [
    ("Two", "2"),                  # number words, lower case
    ("the dog", "dog"),            # articles
    ("an apple", "apple"),
    ("dont", "don't"),             # contractions
    ("yes.", "yes"),               # a period not followed by a digit
    ("black/white", "black white"),  # punctuation not beside a space becomes a space
    ("hello, world", "hello world"),  # ... beside a space it is removed
    ("1,000", "1000"),             # a digit-comma-digit removes all punctuation
    ("none", "0"),
])
def test_official_normalisation_cases(prediction, truth):
    assert vqa_accuracy(prediction, answers(3, truth, "other")) == pytest.approx(0.9)


def test_normalisation_steps_one_by_one():
    assert normalize_punctuation("3.5 apples.") == "3.5 apples"  # a period before a digit stays
    assert normalize_punctuation("a-b") == "a b" and normalize_punctuation("a - b") == "a  b"
    assert normalize_punctuation("." * 40) == "." * 8  # the official call removes at most 32 periods
    assert normalize_digits_articles("The  THREE  Dogs") == "3 dogs"
    assert normalize_digits_articles("Im here") == "im here"  # capitalised keys never match after lower-casing


def test_the_original_normalises_always_the_official_evaluation_only_when_answers_differ():
    same = ["yes"] * 10
    assert vqa_accuracy("Yes", same) == 1.0
    assert vqa_accuracy("Yes", same, official_rule=True) == 0.0
    assert vqa_accuracy("Yes", ["yes"] * 9 + ["no"], official_rule=True) == 1.0
    assert vqa_accuracy("  yes\n", same, official_rule=True) == 1.0  # whitespace is cleaned either way


def test_no_answers_is_an_error():
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_accuracy("x", [])


@pytest.mark.parametrize("text, answer", [
    ("red, blue", "red"),
    ("yes\nQuestion: what", "yes\n"),
    ("cat Short answer: dog", "cat "),
    ("Answer: no", ""),
    ("question mark", "question mark"),  # case-sensitive
    ("a,b, c", "a,b"),
])
def test_postprocess_cuts_like_the_original(text, answer):
    assert postprocess_generation(text) == answer
