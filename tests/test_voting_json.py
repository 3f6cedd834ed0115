import pytest

from taskfit.api import Example
from taskfit.prompting.formats import read_reply, reply_schema
from taskfit.tasks.answers.classification import ClassificationSpace
from taskfit.tasks.answers.voting import vote
from taskfit.tasks.schema import TaskConfig

SPACE = ClassificationSpace(TaskConfig(
    name="t", dataset="t", fields={"text": "text"}, prompt={"input_template": "{text}"},
    labels=[{"value": "negative", "aliases": ["neg"]}, {"value": "positive"}]))
EXAMPLE = Example(index=0, fields={"text": "x"}, gold="positive")


def test_majority_vote_and_distribution():
    result = vote(["positive", "negative", "positive", None], rule="majority")
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
    assert read_reply(SPACE, text, EXAMPLE) == (label, None)


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
    prediction, error = read_reply(SPACE, text, EXAMPLE)
    assert prediction is None and reason in error


def test_schema_lists_label_words():
    schema = reply_schema(SPACE, EXAMPLE)
    assert schema["properties"]["label"]["enum"] == ["negative", "positive"]
    assert schema["required"] == ["label"] and schema["additionalProperties"] is False


def test_the_json_format_scores_each_label_inside_the_object_it_opens():
    """The JSON format owns the key, the quoting and the candidates: a label is scored inside the quote its opener
    opened (no text answer prefix before it); a number is not quoted; a choice is scored by its number."""
    from taskfit.api import Message
    from taskfit.prompting.formats import make_format
    from taskfit.prompting.options import BaseOptions
    from taskfit.tasks.task import load_task

    task = load_task("demo")
    fmt = make_format(task, BaseOptions(answer_format="json"))
    example = task.examples("test", None, 1)[0]
    prompt, continuations = fmt.scoring([Message("user", "q")], fmt.answer_prefix(), fmt.candidates(example), example)
    assert prompt.answer_prefix == '{"label": "' and fmt.answer_prefix() == ""
    assert continuations == [f'{w}"}}' for w in task.space.candidates(example)]
    assert fmt.gold(example) == '{"label": "%s"}' % task.space.word(example)
