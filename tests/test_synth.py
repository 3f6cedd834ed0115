"""taskfit synth: seed rows, requests that depend only on (seed, i), Self-Instruct's filters, resume, the output."""

from __future__ import annotations

import json

import pytest

from taskfit.api import GenerateResult
from taskfit.errors import UserError
from taskfit.settings import load_synth_config, load_tune_config
from taskfit.tasks.task import load_task
from taskfit.tuning.synth import Filters, Plan, Raw, rouge_l_f, synthesize, words

TASK = """
name: mini
dataset: mini
eval_split: dev
pool_split: train
fields: {text: text}
labels:
  - {value: negative}
  - {value: positive}
prompt:
  instruction: Classify the sentiment.
  input_template: "Review: {text}"
  answer_prefix: The sentiment is
generation: {max_tokens: 6, stop: ["\\n"]}
"""
SCORE_TASK = """
name: mini_score
dataset: mini_score
fields: {text: text}
type: regression
score_range: [0, 5]
target: score
prompt:
  instruction: Rate the review from 0 to 5.
  input_template: "Review: {text}"
  answer_prefix: "Score:"
"""
TEXTS = ["a warm and funny film", "dull, slow and far too long", "the cast shines in every scene",
         "a mess from start to finish", "quietly moving and well made", "I wanted my money back",
         "sharp writing and a great score", "flat characters and a silly plot", "a small gem of a movie",
         "boring beyond words", "full of life and surprises", "it never finds its footing"]


@pytest.fixture
def root(tmp_path):
    for name, rows in (("mini", [{"text": t, "label": "positive" if i % 2 == 0 else "negative"}
                                 for i, t in enumerate(TEXTS)]),
                       ("mini_score", [{"text": t, "score": i % 6} for i, t in enumerate(TEXTS)])):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mini.yaml").write_text(TASK)
    (tmp_path / "mini_score.yaml").write_text(SCORE_TASK)
    return tmp_path


def config(root, **kw):
    values = {"task": str(root / "mini.yaml"), "data_dir": str(root / "data"), "seed_rows": 8, "shots": 3,
              "target": 6, "output": str(root / "out" / "synth.jsonl"), **kw}
    return load_synth_config(None, values)


class Cut(Exception):
    """The run killed between two rounds."""


class Scripted:
    """A backend whose replies are a function of the request (its sampling seed), counting what it was asked; with
    ``rounds``, the run is cut after that many rounds."""

    def __init__(self, reply, rounds=None):
        self.reply, self.rounds, self.asked = reply, rounds, []

    def generate(self, requests):
        if self.rounds is not None:
            if self.rounds == 0:
                raise Cut
            self.rounds -= 1
        self.asked += [r.seed for r in requests]
        return [GenerateResult(*self.reply(r)) for r in requests]


def distinct(request):
    """A new review per request: words drawn from the request's seed, so no two are near-duplicates."""
    import random

    rng = random.Random(request.seed)
    vocab = ["plot", "actors", "music", "camera", "ending", "story", "pace", "jokes", "sets", "dialogue", "hero",
             "villain", "score", "light", "colour", "sound", "edit", "twist", "cast", "script"]
    return " " + " ".join(rng.sample(vocab, 6)), 7, "stop"


def test_rouge_l_is_rouge_scores():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [("the cat sat on the mat", "the cat lay on a mat"), ("A warm, funny film!", "a funny and warm film"),
             ("nothing alike here", "completely different words"), ("same same", "same same")]
    for a, b in pairs:
        assert rouge_l_f(words(a), words(b)) == pytest.approx(scorer.score(b, a)["rougeL"].fmeasure)


def test_requests_depend_only_on_seed_and_index(root):
    task = load_task(str(root / "mini.yaml"))
    seeds = task.examples("train", root / "data")[:8]
    plan = Plan(task, seeds, config(root))
    first, again, other = plan.request(5), plan.request(5), plan.request(6)
    assert first == again and first[0].seed != other[0].seed
    request, label, shown = first
    assert label == "positive" and other[1] == "negative"  # labels cycle: balanced, output-first
    assert request.prompt.answer_prefix == "Label: positive\nReview:" and request.stop == ("\n",)
    user = request.prompt.messages[1].content
    assert len(shown) == 3 and all(f"Review: {TEXTS[i]}" in user for i in shown)
    assert "Write one new example with the label positive" in user


def test_filters_drop_what_self_instruct_drops(root):
    task = load_task(str(root / "mini.yaml"))
    seeds = task.examples("train", root / "data")[:8]
    plan = Plan(task, seeds, config(root))
    filters = Filters(plan, seeds, threshold=0.7, quota=2)
    assert filters.judge("", "positive", None, "stop") == "empty"
    assert filters.judge("fine film", "positive", None, "length") == "over_long"
    assert filters.judge("x " * 200, "positive", None, "stop") == "over_long"
    assert filters.judge("A warm and funny film.", "positive", None, "stop") == "copied"  # a seed input
    assert filters.judge("nice one Review: good", "positive", None, "stop") == "copied"  # the prompt's scaffolding
    assert filters.judge("a film about dogs", None, "bad_answer", "stop") == "bad_answer"
    assert filters.judge("a tender story about two old friends", "positive", None, "stop") is None
    assert filters.judge("a tender story about two old friends!", "negative", None, "stop") == "near_duplicate"
    assert filters.judge("the music soars and the actors glow", "positive", None, "stop") is None
    assert filters.judge("crisp editing, bold colours, loud fun", "positive", None, "stop") == "over_quota"
    assert filters.judge("crisp editing, bold colours, loud fun", "negative", None, "stop") is None


def test_input_first_reads_the_answer_with_the_task_parser(root):
    task = load_task(str(root / "mini_score.yaml"))
    seeds = task.examples("train", root / "data")[:8]
    plan = Plan(task, seeds, config(root, task=str(root / "mini_score.yaml")))
    request, label, _ = plan.request(0)
    assert label is None and request.prompt.answer_prefix == "Review:"
    assert "\nScore: " in request.prompt.messages[1].content  # seed rows show their answers
    raw = Raw(0, None, [], " lovely and light\nScore: 4", "stop", 9)
    assert plan.read(raw) == ("lovely and light", 4.0, None)
    assert plan.read(Raw(1, None, [], " lovely\nScore: nine", "stop", 5))[2] == "bad_answer"
    assert plan.read(Raw(2, None, [], " lovely\nScore: 7", "stop", 5))[2] == "bad_answer"  # out of the range
    assert plan.read(Raw(3, None, [], " lovely and light", "stop", 5))[2] == "bad_answer"  # no answer


def test_synth_writes_task_rows_tune_reads(root):
    backend = Scripted(distinct)
    card = synthesize(config(root), backend=backend, progress=False)
    out = root / "out" / "synth.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert card["kept"] == len(rows) == 6 and card["requests"] == 24  # one round, capped at 4 x --target
    assert card["labels"] == {"positive": 3, "negative": 3} and sum(card["dropped"].values()) == 0
    assert [r["label"] for r in rows] == ["negative", "positive"] * 3  # request i asks for label i mod 2
    task = load_task(str(root / "mini.yaml"))
    examples = task.file_examples(out)  # what `tune --task T --train-file OUT` trains on
    assert [e.gold for e in examples] == [r["label"] for r in rows]
    assert [e.fields["text"] for e in examples] == [r["text"] for r in rows]
    tune = load_tune_config(None, {"task": str(root / "mini.yaml"), "train_file": str(out)})
    assert tune.task and tune.train_file == out
    assert (root / "out" / "synth.card.md").read_text().count("over_quota") >= 1


def test_a_cut_run_resumes_to_the_same_rows_without_asking_again(root):
    whole = Scripted(distinct)
    synthesize(config(root, output=str(root / "a" / "s.jsonl"), round_size=4, target=10), backend=whole,
               progress=False)

    settings = config(root, output=str(root / "b" / "s.jsonl"), round_size=4, target=10)
    with pytest.raises(Cut):
        synthesize(settings, backend=Scripted(distinct, rounds=1), progress=False)
    assert not (root / "b" / "s.jsonl").exists()  # nothing half written
    with pytest.raises(UserError, match="--resume"):
        synthesize(settings, backend=Scripted(distinct), progress=False)
    rest = Scripted(distinct)
    card = synthesize(settings, resume=True, backend=rest, progress=False)
    assert card["resumed_requests"] == 4 and len(rest.asked) == len(whole.asked) - 4  # the first round not again
    assert (root / "a" / "s.jsonl").read_text() == (root / "b" / "s.jsonl").read_text()
    other = config(root, output=str(root / "b" / "s.jsonl"), round_size=4, target=10, temperature=0.5)
    with pytest.raises(UserError, match="other settings .*temperature"):
        synthesize(other, resume=True, backend=Scripted(distinct), progress=False)


def test_synth_on_the_tiny_model_is_repeatable(root, tiny_model_dir):
    from taskfit.models.hf import HFBackend

    backend = HFBackend(tiny_model_dir, batch_size=8, threads=1)
    cards = [synthesize(config(root, output=str(root / name / "s.jsonl"), max_requests=8, max_tokens=12),
                        backend=backend, progress=False) for name in ("x", "y")]
    assert cards[0]["requests"] == 8 and cards[0]["new_tokens"] > 0
    assert sum(cards[0]["dropped"].values()) + cards[0]["kept"] == 8
    assert (root / "x" / "s.raw.jsonl").read_text().splitlines()[1:] == \
        (root / "y" / "s.raw.jsonl").read_text().splitlines()[1:]


@pytest.mark.parametrize("change, message", [
    ({"task": "squad"}, "one-input classification, regression, number tasks"),
    ({"task": "stsb"}, "2 input fields"),
    ({"output": "rows.json"}, "must end in .jsonl"),
    ({"shots": 9}, "more than --seed-rows 8"),
    ({"order": "output_first", "task": "<score>"}, "needs a classification task"),
])
def test_bad_requests_say_what_to_do(root, change, message):
    if change.get("task") == "<score>":
        change["task"] = str(root / "mini_score.yaml")
    if "output" in change:
        change["output"] = str(root / change["output"])
    with pytest.raises(UserError, match=message):
        synthesize(config(root, **change), backend=Scripted(distinct), progress=False)
