"""Multi-task tuning data (``tune --mixture``): sampling rules give the declared shares, templates render exactly as
evaluation renders a task with that prompt, k-shot prompts come from the few-shot code, plain text learns every
token, and a mixture trains end to end with a run card that lists rows per task and template."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from taskfit.api import LoglikelihoodResult
from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.models.base import Backend
from taskfit.prompting.tokens import Text, Tokenizer
from taskfit.settings import MixtureSpec, RunConfig, TuneConfig
from taskfit.tasks.task import load_task
from taskfit.tuning import tune
from taskfit.tuning.mixture import TemplatedTask, build_mixture, builtin_templates, draw_rows, mixture_counts


def spec(**fields) -> MixtureSpec:
    return MixtureSpec(tasks=[{"task": "sst2"}], **fields)


@pytest.mark.parametrize(("rule", "options", "expected"), [
    ("proportional", {"cap": 3000}, [100 / 3600, 500 / 3600, 3000 / 3600]),  # the 9000-row task counts 3000
    ("temperature", {"temperature": 2.0}, [v / sum((100**0.5, 500**0.5, 9000**0.5))
                                           for v in (100**0.5, 500**0.5, 9000**0.5)]),
    ("equal", {}, [1 / 3, 1 / 3, 1 / 3]),
])
def test_sampling_rules_give_the_declared_shares(rule, options, expected):
    sizes, weights = [100, 500, 9000], [1.0, 1.0, 1.0]
    counts = mixture_counts(sizes, weights, spec(sampling=rule, total=3000, **options))
    assert sum(counts) == 3000
    assert [c / 3000 for c in counts] == pytest.approx(expected, abs=1 / 3000)
    default_total = mixture_counts(sizes, weights, spec(sampling=rule, **options))
    assert sum(default_total) == 100 + 500 + 3000  # the tasks' sizes, each capped
    weighted = mixture_counts([1000, 1000], [3.0, 1.0], spec(sampling=rule, total=400, **options))
    assert weighted[0] > weighted[1] if rule != "temperature" else weighted[0] >= weighted[1]


def test_drawing_more_rows_than_a_task_has_repeats_each_row_evenly():
    import random

    rows = draw_rows(list(range(7)), 30, random.Random(0))
    assert len(rows) == 30 and set(Counter(rows).values()) <= {4, 5}
    assert draw_rows(list(range(7)), 30, random.Random(0)) == rows  # seeded


class Recorder(Backend):
    """Records the prompts evaluation scores (a made-up log-likelihood)."""

    name = "recorder"

    def __init__(self):
        self.contexts = []

    def render(self, prompt):
        return repr(prompt)

    def loglikelihood(self, requests):
        self.contexts += [r.context for r in requests]
        return [LoglikelihoodResult(-1.0, True, 1) for _ in requests]

    def generate(self, requests):
        raise AssertionError("not used")

    def describe(self):
        return {"backend": "recorder", "model": "recorder"}


def test_every_template_renders_as_evaluation_renders_a_task_with_that_prompt(shared_data, tmp_path):
    task = load_task("sst2")
    examples = task.examples("train", shared_data)[:3]
    templates = [t for t in builtin_templates()["sst2"] if t.target is None]
    assert len(templates) >= 5
    for number, template in enumerate(templates):
        pairs = [TemplatedTask(task, template, examples, 0, 1).sample(e) for e in examples]
        overrides = {k: v for k, v in template.model_dump().items()
                     if k in ("system", "instruction", "input_template", "output_format", "answer_prefix")
                     and v is not None}
        backend = Recorder()
        evaluate(RunConfig(task="sst2", data_dir=shared_data, split="train", limit=3, prompt=overrides,
                           output=tmp_path / str(number), bootstrap_samples=0), backend=backend, progress=False)
        evaluated = {}
        for context in backend.contexts:
            evaluated.setdefault(context.messages[-1].content, context)
        for pair in pairs:
            assert evaluated[pair.prompt.messages[-1].content] == pair.prompt, template.name
            assert pair.answer.strip() in ("positive", "negative")
    assert task.config.prompt.instruction == load_task("sst2").config.prompt.instruction  # the task is untouched


def test_a_turned_around_template_puts_the_answer_in_the_prompt_and_a_field_in_the_target(shared_data):
    task = load_task("sst2")
    example = task.examples("train", shared_data)[0]
    write = next(t for t in builtin_templates()["sst2"] if t.target is not None)
    pair = TemplatedTask(task, write, [example], 0, 1).sample(example)
    assert f"Write one sentence of a {task.space.word(example)} movie review." in pair.prompt.messages[-1].content
    assert pair.answer == example.fields["text"]


def test_k_shot_prompts_come_from_the_few_shot_code_and_never_show_the_row_itself(shared_data):
    task = load_task("ag_news")
    pool = task.examples("train", shared_data)[:40]
    template = builtin_templates()["ag_news"][1]
    templated = TemplatedTask(task, template, pool, 3, 7)
    for example in pool[:10]:
        pair = templated.sample(example)
        messages = pair.prompt.messages
        users = [m for m in messages if m.role == "user"]
        assistants = [m for m in messages if m.role == "assistant"]
        assert len(users) == 4 and len(assistants) == 3
        assert example.fields["text"] in users[-1].content
        assert all(example.fields["text"] not in u.content for u in users[:-1])
        assert pair.prompt.answer_prefix == template.answer_prefix


def test_build_mixture_lists_rows_per_task_and_template(shared_data, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("A paragraph of plain text.\n\nAnother paragraph, also plain.\n")
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        "sampling: proportional\ncap: 150\ntotal: 300\nplain_text: {file: " + str(plain) + ", share: 0.1}\n"
        "tasks:\n  - {task: sst2, limit: 400}\n  - {task: ag_news, limit: 100}\n"
        "  - {task: stsb, limit: 60, templates: task}\n")
    config = TuneConfig(mixture=mix, data_dir=shared_data, seed=3)
    samples, info = build_mixture(config)
    tasks = {t["task"]: t for t in info["mixture"]["tasks"]}
    assert [tasks[n]["rows"] for n in ("sst2", "ag_news", "stsb")] == [145, 97, 58]  # 150 : 100 : 60 of 300
    assert all(sum(t["templates"].values()) == t["rows"] for t in tasks.values())
    assert len(tasks["sst2"]["templates"]) >= 5 and all(v > 0 for v in tasks["sst2"]["templates"].values())
    assert tasks["stsb"]["templates"] == {"task": 58}
    assert info["mixture"]["plain_text_rows"] == 33 == sum(isinstance(s, Text) for s in samples)
    assert len(samples) == info["n"] == 300 + 33
    again, _ = build_mixture(config)
    assert again == samples  # seeded


def test_plain_text_files_are_read_as_training_files_are(tmp_path):
    from taskfit.tuning.mixture import read_plain_text

    rows = tmp_path / "plain.jsonl"
    rows.write_text('{"text": "one paragraph"}\n\n{"text": "another"}\n')
    assert read_plain_text(rows) == ["one paragraph", "another"]
    rows.write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    with pytest.raises(UserError, match=r"plain.jsonl:2: key 'text'"):
        read_plain_text(rows)
    rows.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(UserError, match=r"plain.jsonl:2: not valid JSON"):
        read_plain_text(rows)


def test_plain_text_learns_every_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenized = Tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir))(Text("the movie was great"), 64)
    assert tokenized.labels == tokenized.input_ids and len(tokenized.input_ids) > 2


def test_bad_mixtures_are_refused_clearly(tmp_path, shared_data):
    mix = tmp_path / "mix.yaml"
    mix.write_text("tasks:\n  - {task: truthfulqa_mc1, split: dev}\n")
    with pytest.raises(UserError, match="no templates for it"):
        build_mixture(TuneConfig(mixture=mix, data_dir=shared_data))
    mix.write_text("tasks: []\n")
    with pytest.raises(UserError, match="tasks"):
        build_mixture(TuneConfig(mixture=mix, data_dir=shared_data))
    with pytest.raises(UserError, match="no such file"):
        build_mixture(TuneConfig(mixture=tmp_path / "missing.yaml"))


def test_tune_on_a_mixture_writes_the_mixture_into_the_run_card(tmp_path, tiny_model_dir, shared_data):
    mix = tmp_path / "mix.yaml"
    mix.write_text("sampling: equal\ntotal: 24\nk_shot: 1\ntasks:\n  - {task: sst2, limit: 30}\n"
                   "  - {task: ag_news, limit: 30}\n")
    out = tmp_path / "out"
    result = tune(TuneConfig(model=f"hf:{tiny_model_dir}", mixture=mix, data_dir=shared_data, output=out,
                             batch_size=4, max_steps=2, progress=False, threads=1, max_length=256))
    card = json.loads((out / "run_card.json").read_text())
    assert card["steps"] == result.card["steps"] == 2
    rows = {t["task"]: t["rows"] for t in card["data"]["mixture"]["tasks"]}
    assert rows == {"sst2": 12, "ag_news": 12}
    assert "a mixture of sst2 (12 rows" in (out / "RUN_CARD.md").read_text()
