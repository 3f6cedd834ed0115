import pytest

from taskfit.tasks.answers.parsing import parse_label
from taskfit.tasks.schema import LabelSpec

LABELS = [LabelSpec(value="negative", aliases=["neg", "负面"]), LabelSpec(value="positive", aliases=["pos", "正面"])]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" positive.", "positive"),
        ("Positive", "positive"),
        (" NEGATIVE\n", "negative"),
        ("The answer is negative, not positive", "negative"),
        ("positive or negative? I'd say negative", "positive"),  # first mention wins, as documented
        ("这条评论是负面的", "negative"),
        ("pos", "positive"),
        ("positively wonderful", None),  # a word containing a label is not the label
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_parse_label(text, expected):
    assert parse_label(text, LABELS) == expected


def test_longer_name_wins_at_same_position():
    labels = [LabelSpec(value="good"), LabelSpec(value="bad", aliases=["good grief"])]
    assert parse_label("good grief, that was long", labels) == "bad"
    assert parse_label("good movie", labels) == "good"
