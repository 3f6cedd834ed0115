"""Task types: parsing, log-likelihood readouts, voting and per-example scoring of each answer space."""

import math

import pytest

from taskfit.api import Example
from taskfit.prompting.formats import read_reply
from taskfit.tasks.answers import ANSWER_SPACES
from taskfit.tasks.answers.parsing import normalize_number, parse_final_number, parse_first_number
from taskfit.tasks.schema import TaskConfig


def space_for(type_, **extra):
    config = TaskConfig.model_validate({"name": "t", "type": type_, "dataset": "d", "fields": {"q": "q"},
                                        "prompt": {"input_template": "{q}"}, **extra})
    return ANSWER_SPACES[type_](config)


@pytest.mark.parametrize(("text", "value"), [
    ("The answer is $1,234.", "1234"),
    ("She earns 12 an hour, works 5 hours: 60. The answer is 60 dollars", "60"),
    ("3 + 4 = 7, so 7 apples", "7"),
    ("#### 72", "72"),
    ("The answer is 0.50", "0.5"),
    ("The answer is -3", "-3"),
    ("Answer: 18.0 cookies", "18"),
    ("no digits here", None),
])
def test_final_number(text, value):
    assert parse_final_number(text) == value


def test_number_normalization():
    assert normalize_number("1,000") == "1000"
    assert normalize_number("$5.10") == "5.1"
    assert normalize_number("abc") is None
    assert parse_first_number("I'd say 3.5 out of 5") == 3.5


def test_number_space_scores_exactly_and_reads_gsm8k_solutions():
    space = space_for("number")
    gold, _ = space.gold("Natalia sold 48/2 = 24 clips.\n#### 72", {}, 0, "x")
    assert gold == "72"
    ex = Example(0, {"q": "?"}, gold)
    assert space.parse("so she sold 72 clips in all", ex) == ("72", None)
    assert space.score(ex, "72") == {"correct": True}
    assert space.score(ex, "72.5") == {"correct": False}
    assert read_reply(space, '{"answer": 72}', ex) == ("72", None)
    assert space.combine(["72", "70", "72", None], [None] * 4, "majority").winner == "72"


def test_regression_expected_value_parsing_and_imputation():
    space = space_for("regression", score_range=[0, 5])
    ex = Example(0, {"q": "?"}, 4.0)
    words = space.candidates(ex)
    assert words == ["0", "1", "2", "3", "4", "5"]
    logprobs = [math.log(p) for p in (0.0001, 0.0001, 0.0001, 0.5, 0.4997, 0.0001)]
    prediction, extra = space.from_scores(ex, words, logprobs)
    expected = sum(i * p for i, p in enumerate(extra["probs"].values()))
    assert prediction == pytest.approx(expected, abs=1e-6) and 3.4 < prediction < 3.6
    assert space.parse("4.5, because", ex) == (4.5, None)
    assert space.parse("7", ex)[0] is None and "outside" in space.parse("7", ex)[1]
    assert read_reply(space, '{"score": 2}', ex) == (2.0, None)
    assert space.score(ex, None)["score"] == 2.5  # unparsed -> middle of the range
    assert space.score(ex, 3.0) == {"score": 3.0, "abs_error": 1.0}
    assert space.combine([1.0, 3.0, None], [None] * 3, "majority").winner == 2.0


def mc_space(**choices):
    return space_for("multiple_choice", choices={"column": "choices", **choices})


def test_multiple_choice_shuffle_is_seeded_and_tracks_the_true_answer():
    space = mc_space()
    row = {"choices": ["right", "w1", "w2", "w3", "w4"], "label": 0}
    golds = []
    for index in range(20):
        gold, meta = space.gold(0, row, index, "x")
        assert meta["choices"][gold[0]] == "right"
        assert sorted(meta["choices"]) == sorted(row["choices"])
        assert space.gold(0, row, index, "x") == (gold, meta)  # same seed, same order
        golds.append(gold[0])
    assert len(set(golds)) > 1  # the true answer is not always first any more
    unshuffled = mc_space(shuffle=False).gold(0, row, 3, "x")
    assert unshuffled == ([0], {"choices": row["choices"], "order": [0, 1, 2, 3, 4], "header": "Choices:"})


def test_multiple_choice_mc2_readout_and_parsing():
    space = mc_space(labels_column="labels", shuffle=False)
    gold, meta = space.gold(None, {"choices": ["t1", "t2", "f1", "f2"], "labels": [1, 1, 0, 0]}, 0, "x")
    ex = Example(0, {"q": "?"}, gold, meta=meta)
    assert gold == [0, 1]
    logprobs = [math.log(x) for x in (0.1, 0.2, 0.3, 0.4)]
    prediction, extra = space.from_scores(ex, space.candidates(ex), logprobs)
    assert prediction == 3 and extra["mc2"] == pytest.approx(0.3)
    assert space.score(ex, prediction) == {"correct": False}
    assert space.parse("2. t2", ex) == (1, None)
    assert space.parse("t1 is right", ex) == (0, None)
    assert read_reply(space, '{"answer": 4}', ex) == (3, None)
    assert read_reply(space, '{"answer": 9}', ex)[0] is None
    assert space.value_candidates(ex) == [1, 2, 3, 4]  # JSON scores the choice numbers (listed in the prompt)
    assert "1. t1" in space.prompt_extra(ex, scored_texts=False)
    assert space.prompt_extra(ex, scored_texts=True) == ""  # the choice texts are what is scored


def test_span_scores_with_squad_rules():
    space = space_for("span")
    gold, _ = space.gold(["Denver Broncos", "The Denver Broncos"], {}, 0, "x")
    ex = Example(0, {"q": "?"}, gold)
    prediction, error = space.parse(' "the Denver Broncos."\nThey won.', ex)
    assert prediction == "the Denver Broncos" and error is None
    assert space.score(ex, prediction) == {"em": 1.0, "f1": 1.0}
    assert space.score(ex, "Broncos")["f1"] == pytest.approx(2 / 3)
    assert space.score(ex, None) == {"em": 0.0, "f1": 0.0}
    assert space.parse("   ", ex) == (None, "empty answer")
    with pytest.raises(Exception, match="generate"):
        space.check_mode("loglikelihood")


def test_classification_json_value_must_be_a_label():
    space = space_for("classification", labels=[{"value": "neg"}, {"value": "pos", "aliases": ["good"]}])
    ex = Example(0, {"q": "?"}, "pos")
    assert read_reply(space, '{"label": "good"}', ex) == ("pos", None)
    assert read_reply(space, '{"label": "neg | pos"}', ex)[0] is None
    assert space.combine(["neg", "pos"], [None, None], "majority").winner == "neg"  # tie: label order
