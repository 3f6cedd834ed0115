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
