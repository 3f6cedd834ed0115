"""The evaluation workflow's own rules, on a tiny random model: the default mode follows the task type."""

import json

from taskfit.evaluation import evaluate
from taskfit.models.hf import HFBackend
from taskfit.settings import RunConfig

SPAN_TASK = """
name: mini_span
dataset: mini
eval_split: dev
type: span
fields: {context: context, question: question}
target: answer
prompt:
  input_template: "{context}\\nQuestion: {question}"
  answer_prefix: "Answer:"
generation: {max_tokens: 4}
"""


def test_default_mode_follows_the_task_type(tmp_path, tiny_model_dir):
    (tmp_path / "data" / "mini").mkdir(parents=True)
    rows = [{"context": f"Ann has {i} cats.", "question": "How many cats?", "answer": str(i)} for i in range(3)]
    (tmp_path / "data" / "mini" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "span.yaml").write_text(SPAN_TASK)
    config = RunConfig(task=str(tmp_path / "span.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       bootstrap_samples=0, cache=False)
    assert config.mode is None
    results = evaluate(config, backend=HFBackend(tiny_model_dir, threads=1), progress=False)
    assert results["config"]["mode"] == "generate" and results["counts"]["n"] == 3
    assert all("generated_tokens" in json.loads(line)
               for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines())


CLASSIFY_TASK = """
name: mini_cls
dataset: mini
eval_split: dev
fields: {text: text}
labels: [{value: neg}, {value: pos}]
prompt:
  system: "SYSTEM-RULES"
  instruction: "INSTRUCTION-LINE"
  input_template: "Text: {text}"
"""


def test_a_row_longer_than_the_window_loses_input_not_instruction(tmp_path, tiny_model_dir):
    """Issue 16 defect 4: a 100,000-character row used to be cut from the left, dropping the system prompt and the
    instruction while samples.jsonl recorded the whole prompt."""
    (tmp_path / "data" / "mini").mkdir(parents=True)
    rows = [{"text": "short one", "label": "pos"}, {"text": "word " * 20000, "label": "neg"}]
    (tmp_path / "data" / "mini" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cls.yaml").write_text(CLASSIFY_TASK)
    backend = HFBackend(tiny_model_dir, threads=1)
    config = RunConfig(task=str(tmp_path / "cls.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       bootstrap_samples=0, cache=False)
    results = evaluate(config, backend=backend, progress=False)
    short, long = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert "truncated" not in short
    assert long["truncated"]["field"] == "text" and long["truncated"]["chars"] == 100000
    assert 0 < long["truncated"]["kept_chars"] < 1000
    assert "SYSTEM-RULES" in long["prompt"] and "INSTRUCTION-LINE" in long["prompt"] and " …" in long["prompt"]
    assert backend.count_tokens(long["prompt"]) <= backend.context_window()  # what is recorded is what was scored
    assert results["counts"]["truncated_inputs"] == 1
    assert backend.stats.get("prompts_cut_left", 0) == 0  # the backend's last-resort cut was never needed


def test_every_run_records_its_cost_and_links_a_tuned_models_run_card(tmp_path, tiny_model_dir):
    (tmp_path / "data" / "mini").mkdir(parents=True)
    rows = [{"context": f"Ann has {i} cats.", "question": "How many cats?", "answer": str(i)} for i in range(3)]
    (tmp_path / "data" / "mini" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "span.yaml").write_text(SPAN_TASK)
    adapter = tmp_path / "adapter"  # what `taskfit tune` leaves beside its weights
    adapter.mkdir()
    (adapter / "run_card.json").write_text(json.dumps({"train_s": 12.5, "trainable_parameters": 4096, "steps": 8,
                                                       "data": {"task": "mini", "n": 64}}))
    config = RunConfig(task=str(tmp_path / "span.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       bootstrap_samples=0, cache=False, adapter=adapter)
    results = evaluate(config, backend=HFBackend(tiny_model_dir, threads=1), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    cost = results["cost"]
    assert cost["generated_tokens"] == sum(r["generated_tokens"] for r in records) > 0
    assert cost["requests_cached"] == 0 and cost["rows_resumed"] == 0 and cost["peak_rss_mib"] > 0
    assert cost["training"] == {"run_card": str(adapter / "run_card.json"), "train_s": 12.5,
                                "trainable_parameters": 4096, "labelled_examples": 64, "steps": 8}


def test_fitting_renders_only_rows_that_could_come_near_the_window(tmp_path, tiny_model_dir):
    """A demo pool of many short rows is not pushed through the chat template row by row (SST-2's 67k-row pool took
    9 s); a row near the window still is, and is shortened."""
    from taskfit.api import Example
    from taskfit.prompting.fitting import fit_examples
    from taskfit.prompting.prompts import task_prompt
    from taskfit.tasks.task import load_task

    (tmp_path / "cls.yaml").write_text(CLASSIFY_TASK)
    task = load_task(str(tmp_path / "cls.yaml"))
    backend = HFBackend(tiny_model_dir, threads=1)
    backend.max_length = 4096  # counting only: a real model's window, not the tiny one's
    rendered = []
    render = backend.render
    backend.render = lambda prompt: rendered.append(prompt) or render(prompt)
    window = backend.context_window()
    rows = [Example(i, {"text": f"short row {i}"}, "pos") for i in range(200)]
    rows.append(Example(200, {"text": "x " * window}, "neg"))  # about a token a character pair: past the window
    fitted = fit_examples(rows, task, "loglikelihood", backend, reserve=16)
    assert fitted[:200] == rows[:200]
    assert fitted[200].meta["truncated"]["field"] == "text"
    assert backend.count_tokens(render(task_prompt(task, fitted[200], "loglikelihood"))) <= window - 16
    assert len([p for p in rendered if "short row" in p.messages[-1].content]) == 1  # the first row, measured


def test_a_run_records_the_demonstration_pool_it_read(tmp_path, tiny_model_dir):
    """results.json says which pool split a run read and how many rows (the report's caveat reads it): few-shot
    with k > 0 and APE read one; zero-shot and few-shot with k = 0 do not."""
    backend = HFBackend(tiny_model_dir, threads=1)

    def pool(name: str, strategy: str, **args):
        config = RunConfig(task="demo", limit=4, strategy=strategy, strategy_args=args, output=tmp_path / name,
                           bootstrap_samples=0, cache=False)
        return evaluate(config, backend=backend, progress=False)["pool"]

    assert pool("fs", "few_shot", k=2) == {"split": "test", "rows": 80, "evaluated_split": True}
    assert pool("zero", "zero_shot") is None
    assert pool("k0", "few_shot", k=0) is None
