import pytest

from taskfit.prompting.json_answers import label_schema, parse_json_label
from taskfit.prompting.voting import vote
from taskfit.tasks.task import LabelSpec

LABELS = [LabelSpec(value="negative", aliases=["neg"]), LabelSpec(value="positive")]


def test_majority_vote_and_distribution():
    result = vote(["positive", "negative", "positive", None], method="majority")
    assert result.winner == "positive"
    assert result.distribution == {"negative": 1.0, "positive": 2.0}
    assert result.valid == 3


def test_weighted_vote_follows_path_probability():
    # two unlikely paths say positive, one very likely path says negative
    answers = ["positive", "positive", "negative"]
    logprobs = [-20.0, -21.0, -2.0]
    assert vote(answers, logprobs, "majority").winner == "positive"
    weighted = vote(answers, logprobs, "weighted")
    assert weighted.winner == "negative"
    assert sum(weighted.distribution.values()) == pytest.approx(1.0)


def test_ties_break_by_probability_mass_then_label_order():
    assert vote(["a", "b"], [-5.0, -1.0], "majority").winner == "b"  # equal counts, b's path more likely
    assert vote(["b", "a"], None, "majority", preference=["a", "b"]).winner == "a"  # no probabilities: label order
    assert vote(["b", "a"], None, "majority", preference=["b", "a"]).winner == "b"
    assert vote(["z", "y"], None, "majority").winner == "y"  # last resort: alphabetical


def test_all_unparsed_gives_no_winner():
    result = vote([None, None], [-1.0, -2.0], "weighted")
    assert result.winner is None and result.valid == 0


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ('{"label": "positive"}', "positive"),
        ('```json\n{"label": "negative"}\n```', "negative"),
        ('Sure! Here is my answer: {"label": "Positive"} I hope this helps.', "positive"),
        ("{'label': 'neg'}", "negative"),
        ('{"label": "positive"', "positive"),  # truncated
        ('{"label": "positive",}', "positive"),  # trailing comma
    ],
)
def test_messy_json_parses(text, label):
    parsed = parse_json_label(text, LABELS)
    assert parsed.label == label and parsed.error is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("positive", "no JSON object"),
        ('{"answer": "positive"}', "no 'label' key"),
        ('{"label": "negative | positive"}', "not one of the labels"),
        ('{"label": "neutral"}', "not one of the labels"),
        ("[1, 2]", "no JSON object"),
    ],
)
def test_json_failures_say_why(text, reason):
    parsed = parse_json_label(text, LABELS)
    assert parsed.label is None and reason in parsed.error


def test_schema_lists_label_words():
    schema = label_schema(LABELS)
    assert schema["properties"]["label"]["enum"] == ["negative", "positive"]
    assert schema["required"] == ["label"]
