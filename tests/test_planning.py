"""Planning strategies: program-aided answers with feedback (through the sandbox) and plan-and-solve, on a scripted
backend and a made-up number task, run through evaluation like any strategy."""

import json
import re

import pytest

from taskfit.api import GenerateResult
from taskfit.errors import UserError
from taskfit.evaluation import evaluate
from taskfit.models.base import Backend
from taskfit.settings import RunConfig

QUESTIONS = [  # (question, gold, what the scripted model writes first)
    ("What is 2 plus 3?", 5, "right"),
    ("What is 10 plus 7?", 17, "name_error"),
    ("What is 4 plus 4?", 8, "not_a_number"),
    ("What is 1 plus 1?", 2, "loops"),
]


class ScriptedProgrammer(Backend):
    """Writes programs for "What is A plus B?": right away, or first with a bug that feedback fixes, or a program
    that never ends; and plain text for plan-and-solve's plan, solution and answer."""

    name = "scripted"

    def __init__(self):
        self.requests = []

    def render(self, prompt):
        return "\n".join(f"{m.role}: {m.content}" for m in prompt.messages) + "\nassistant: " + prompt.answer_prefix

    def loglikelihood(self, requests):
        raise AssertionError("not used")

    def generate(self, requests):
        self.requests.extend(requests)
        return [GenerateResult(self._reply(self.render(r.prompt)), 5, "stop", -1.0) for r in requests]

    def _reply(self, text):
        a, b = map(int, re.search(r"What is (\d+) plus (\d+)\?", text).groups())
        if text.endswith("```python\n"):
            kind = next(k for q, _, k in QUESTIONS if q == f"What is {a} plus {b}?")
            fed_back = "Running the program failed" in text or "not a number" in text
            if kind == "loops":
                return "while True:\n    pass\n```"
            if kind == "right" or fed_back:
                return f"first = {a}\nsecond = {b}\nanswer = first + second\n```"
            return {"name_error": f"answer = {a} + {b} + carry\n```", "not_a_number": "answer = 'many'\n```"}[kind]
        if text.endswith("Plan:"):
            return "1. Read the two numbers. 2. Add them."
        if text.endswith("step by step:"):
            return f"{a} + {b} = {a + b}."
        return f" {a + b}."

    def describe(self):
        return {"backend": "scripted", "model": "scripted"}


@pytest.fixture
def number_task(tmp_path):
    rows = [{"question": q, "final": str(g)} for q, g, _ in QUESTIONS]
    (tmp_path / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "sums.yaml").write_text(
        "name: sums\ntype: number\ndata_files: {test: sums.jsonl}\neval_split: test\nfields: {question: question}\n"
        "target: final\nprompt:\n  instruction: Solve it.\n  input_template: 'Question: {question}'\n"
        "  answer_prefix: 'The answer is'\nmetrics: [accuracy]\n")
    return tmp_path / "sums.yaml"


def test_programs_run_in_the_sandbox_and_errors_are_fed_back(number_task, tmp_path):
    backend = ScriptedProgrammer()
    config = RunConfig(task=str(number_task), mode="generate", strategy="program", output=tmp_path / "run",
                       strategy_args={"revisions": 2, "timeout_s": 1.0}, bootstrap_samples=0)
    results = evaluate(config, backend=backend, progress=False)
    samples = {s["index"]: s for s in map(json.loads, (tmp_path / "run" / "samples.jsonl").read_text().splitlines())}
    right, name_error, not_a_number, loops = (samples[i] for i in range(4))
    assert right["prediction"] == "5" and right["correct"] and right["revisions_used"] == 0
    assert name_error["prediction"] == "17" and name_error["revisions_used"] == 1
    assert "NameError" in name_error["attempts"][0]["error"] and name_error["attempts"][1]["ok"]
    assert not_a_number["prediction"] == "8" and "not a number" in not_a_number["attempts"][0]["error"]
    assert loops["prediction"] is None and not loops["parse_ok"] and not loops["program_ok"]
    assert len(loops["attempts"]) == 3 and all("timed out" in a["error"] for a in loops["attempts"])
    assert results["metrics"]["accuracy"]["value"] == pytest.approx(0.75)
    # the feedback is the next user turn, after the failed program as the assistant's turn
    revision = next(r for r in backend.requests if "carry" in "".join(m.content for m in r.prompt.messages))
    assert revision.prompt.messages[-2].role == "assistant" and "NameError" in revision.prompt.messages[-1].content
    firsts = [r for r in backend.requests if all(m.role != "assistant" for m in r.prompt.messages)]
    assert len(firsts) == len(QUESTIONS) and all(r.temperature == 0 for r in firsts)
    assert revision.temperature == 0.7  # revisions are sampled


def test_program_needs_a_number_task(tmp_path, shared_data):
    config = RunConfig(task="sst2", data_dir=shared_data, strategy="program", output=tmp_path / "run", limit=2)
    with pytest.raises(UserError, match="number task"):
        evaluate(config, backend=ScriptedProgrammer(), progress=False)


@pytest.mark.parametrize("n", [1, 3])
def test_plan_and_solve_plans_then_solves_then_answers(number_task, tmp_path, n):
    backend = ScriptedProgrammer()
    config = RunConfig(task=str(number_task), mode="generate", strategy="plan_and_solve", output=tmp_path / "run",
                       strategy_args={"n": n}, bootstrap_samples=0)
    results = evaluate(config, backend=backend, progress=False)
    assert results["metrics"]["accuracy"]["value"] == 1.0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    plans = [r for r in backend.requests if r.prompt.answer_prefix.endswith("Plan:")]
    solves = [r for r in backend.requests if r.prompt.answer_prefix.endswith("step by step:")]
    assert len(plans) == len(solves) == n * len(QUESTIONS)
    assert all("1. Read the two numbers" in r.prompt.answer_prefix for r in solves)  # the solution follows the plan
    if n == 1:
        assert "Add them." in samples[0]["rationale"] and "2 + 3 = 5" in samples[0]["rationale"]
    else:
        assert all(r.temperature > 0 for r in plans) and len({r.seed for r in plans}) == len(plans)
        assert samples[0]["votes"] == {"5": 3.0}
