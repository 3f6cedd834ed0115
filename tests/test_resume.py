"""Crash safety: a killed run resumes from its whole chunks and ends identical to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from taskfit.errors import ServerError, UserError
from taskfit.evaluation import evaluate
from taskfit.models.hf import HFBackend
from taskfit.settings import RunConfig

TASK = """
name: mini
dataset: mini
eval_split: dev
fields: {text: text}
labels:
  - {value: negative}
  - {value: positive}
prompt:
  instruction: Classify the sentiment.
  input_template: "Review: {text}"
  answer_prefix: The sentiment is
generation: {max_tokens: 12, stop: ["never-appears"]}
"""


def make_task(root, n):
    (root / "data" / "mini").mkdir(parents=True)
    rows = [{"text": f"the movie number {i} was {'great' if i % 3 else 'terrible'}",
             "label": "positive" if i % 3 else "negative"} for i in range(n)]
    (root / "data" / "mini" / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mini.yaml").write_text(TASK)


def eval_argv(root, tiny_model_dir, out):
    return [sys.executable, "-m", "taskfit.cli", "eval", "--task", str(root / "mini.yaml"), "--data-dir",
            str(root / "data"), "--model", f"hf:{tiny_model_dir}", "--mode", "generate", "--batch-size", "2",
            "--threads", "1", "--bootstrap-samples", "100", "--no-progress", "--no-cache", "--output", str(out)]


def comparable(results):
    return {k: results[k] for k in ("metrics", "counts")}


def test_kill_9_then_resume_gives_identical_results(tmp_path, tiny_model_dir):
    make_task(tmp_path, 400)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(eval_argv(tmp_path, tiny_model_dir, killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    samples = killed / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if samples.exists() and samples.read_text().count("\n") >= 40:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = samples.read_text().count("\n")
    assert 40 <= partial < 400 and not (killed / "results.json").exists()

    resumed = subprocess.run(eval_argv(tmp_path, tiny_model_dir, killed), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    subprocess.run(eval_argv(tmp_path, tiny_model_dir, clean), check=True, capture_output=True)

    # the same records; a log-probability may differ in its last float digits (the resumed process ran its
    # shared prompt prefix for other batches than the uninterrupted one, which kept it from its first chunk)
    records = [[json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
               for folder in (killed, clean)]
    logprobs = [[r.pop("logprob", None) for r in rows] for rows in records]
    assert records[0] == records[1]
    assert logprobs[0] == pytest.approx(logprobs[1], abs=1e-4)
    got = json.loads((killed / "results.json").read_text())
    want = json.loads((clean / "results.json").read_text())
    assert comparable(got) == comparable(want)
    assert got["timings"]["resumed_after"] >= partial - 1  # at most the cut line is redone


def test_cut_line_is_redone_and_other_configs_are_refused(tmp_path, tiny_model_dir):
    make_task(tmp_path, 70)
    backend = HFBackend(tiny_model_dir, batch_size=8, threads=1)
    config = RunConfig(task=str(tmp_path / "mini.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       batch_size=8, bootstrap_samples=50)
    evaluate(config, backend=backend, progress=False)
    full = (tmp_path / "run" / "samples.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (tmp_path / "run" / "samples.jsonl").write_text("".join(lines[:40]) + lines[40][:25])  # crash mid-line
    again = evaluate(config, backend=backend, progress=False)
    assert (tmp_path / "run" / "samples.jsonl").read_text() == full
    # every whole record is kept; the cut chunk is recomputed from its start (chunk = 4 x batch size = 32) so
    # the batches match an uninterrupted run, and only its missing records are appended
    assert again["timings"]["resumed_after"] == 40

    with pytest.raises(UserError, match="different configuration"):
        evaluate(config.model_copy(update={"seed": 99}), backend=backend, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "samples.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="not a taskfit eval run"):
        evaluate(config.model_copy(update={"output": tmp_path / "other"}), backend=backend, progress=False)


def test_random_sample_is_seeded_in_data_order_and_resumes(tmp_path, tiny_model_dir):
    make_task(tmp_path, 200)
    backend = HFBackend(tiny_model_dir, batch_size=8, threads=1)
    config = RunConfig(task=str(tmp_path / "mini.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       batch_size=8, bootstrap_samples=0, limit=70, sample="random")
    evaluate(config, backend=backend, progress=False)
    full = (tmp_path / "run" / "samples.jsonl").read_text()
    indices = [json.loads(line)["index"] for line in full.splitlines()]
    assert len(indices) == len(set(indices)) == 70 and indices == sorted(indices)
    assert indices != list(range(70)) and max(indices) > 100  # drawn from the whole split
    rows = (tmp_path / "data" / "mini" / "dev.jsonl").read_text().splitlines()
    for line in full.splitlines():  # each sample is the data row it names
        sample = json.loads(line)
        assert sample["input"]["text"] == json.loads(rows[sample["index"]])["text"]

    lines = full.splitlines(keepends=True)
    (tmp_path / "run" / "samples.jsonl").write_text("".join(lines[:45]))  # killed after 45 examples
    again = evaluate(config, backend=backend, progress=False)
    assert again["timings"]["resumed_after"] == 45
    assert (tmp_path / "run" / "samples.jsonl").read_text() == full

    other = evaluate(config.model_copy(update={"seed": 7, "output": tmp_path / "seed7"}), backend=backend,
                     progress=False)
    other_indices = [json.loads(line)["index"] for line in
                     (tmp_path / "seed7" / "samples.jsonl").read_text().splitlines()]
    assert other["counts"]["n"] == 70 and other_indices != indices


class FailingBackend:
    """A backend whose every request fails, as a model server that went away does."""

    def render(self, prompt):
        return "x"

    def loglikelihood(self, requests):
        raise ServerError("server gone")

    generate = loglikelihood

    def describe(self):
        return {"backend": "failing"}


def test_rerun_of_a_complete_run_needs_no_model_and_keeps_its_samples(tmp_path, tiny_model_dir):
    """Issue 16, defect 1: rerunning a finished run cut samples.jsonl back before any request; a failing rerun
    then left it empty while results.json still counted the old rows."""
    make_task(tmp_path, 5)
    config = RunConfig(task=str(tmp_path / "mini.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       batch_size=8, bootstrap_samples=0)
    first = evaluate(config, backend=HFBackend(tiny_model_dir, batch_size=8, threads=1), progress=False)
    samples = (tmp_path / "run" / "samples.jsonl").read_text()
    again = evaluate(config, backend=FailingBackend(), progress=False)  # complete: no request is made
    assert (tmp_path / "run" / "samples.jsonl").read_text() == samples
    assert again["counts"] == first["counts"] and again["metrics"] == first["metrics"]

    (tmp_path / "run" / "results.json").unlink()  # killed between the last chunk and results.json
    rewritten = evaluate(config, backend=FailingBackend(), progress=False)
    assert rewritten["counts"] == first["counts"] and rewritten["timings"]["resumed_after"] == 5
    assert (tmp_path / "run" / "samples.jsonl").read_text() == samples


def test_failing_rerun_of_a_cut_run_loses_no_whole_record(tmp_path, tiny_model_dir):
    make_task(tmp_path, 40)
    config = RunConfig(task=str(tmp_path / "mini.yaml"), data_dir=tmp_path / "data", output=tmp_path / "run",
                       batch_size=8, bootstrap_samples=0)
    evaluate(config, backend=HFBackend(tiny_model_dir, batch_size=8, threads=1), progress=False)
    path = tmp_path / "run" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:35]) + lines[35][:10])  # crash after 35 whole records and a cut line
    with pytest.raises(ServerError):
        evaluate(config, backend=FailingBackend(), progress=False)
    assert path.read_text().splitlines(keepends=True)[:35] == lines[:35]  # nothing whole was discarded
