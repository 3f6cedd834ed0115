"""The llamacpp backend (llama.cpp in process, the embedded GGUF) and the openai backend against a real
llama.cpp server on 127.0.0.1, including one that is stopped in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.models import load_backend

REVIEW = Prompt((Message("user", "Classify the sentiment: I loved this movie."),), "The sentiment of the review is")
OTHER = Prompt((Message("user", "Classify the sentiment: a dull, lifeless film."),), "The sentiment of the review is")
FRUITS = Prompt((Message("user", "Name three fruits."),))


@pytest.fixture(scope="module")
def llama():
    backend = load_backend("llamacpp", "smollm2-135m-instruct", threads=2)
    yield backend
    backend.close()


def test_default_slots_are_the_measured_fastest(llama):
    from taskfit.models.llamacpp import DEFAULT_PARALLEL

    assert llama.parallel == DEFAULT_PARALLEL == 8  # benchmarks/results/generation_throughput.md
    assert llama.generation_slots() == 8  # the assistant's gate admits as many answers as the server has slots


def test_loglikelihood_forces_the_continuation_and_follows_the_chain_rule(llama):
    requests = [LoglikelihoodRequest(REVIEW, " positive"), LoglikelihoodRequest(OTHER, " negative"),
                LoglikelihoodRequest(REVIEW, " negative"), LoglikelihoodRequest(REVIEW, " very positive indeed")]
    results = llama.loglikelihood(requests)
    assert [r.n_tokens for r in results] == [1, 1, 1, 3]
    assert all(r.logprob < 0 for r in results)
    # request order is kept although requests are grouped by context
    assert llama.loglikelihood([requests[1]])[0].logprob == pytest.approx(results[1].logprob, abs=1e-4)
    # log p(" very positive indeed") = log p(" very") + log p(" positive indeed" | ... " very")
    head = llama.loglikelihood([LoglikelihoodRequest(REVIEW, " very")])[0]
    longer = Prompt(REVIEW.messages, REVIEW.answer_prefix + " very")
    tail = llama.loglikelihood([LoglikelihoodRequest(longer, " positive indeed")])[0]
    assert head.logprob + tail.logprob == pytest.approx(results[3].logprob, abs=2e-3)
    assert llama.stats["cached_tokens"] > 0  # the shared context was reused, not recomputed


def test_generation_is_seeded_and_cut_at_stops(llama):
    greedy = GenerateRequest(FRUITS, ("\n",), 24)
    sampled = [GenerateRequest(FRUITS, (), 32, temperature=1.0, top_p=0.95, seed=s) for s in (5, 5, 6)]
    first = llama.generate([greedy, *sampled])
    again = llama.generate([greedy, *sampled])
    assert [r.text for r in first] == [r.text for r in again]
    assert first[1].text == first[2].text and first[1].text != first[3].text
    assert "\n" not in first[0].text and first[0].text.strip() and first[0].finish_reason == "stop"
    assert first[3].n_tokens <= 32 and first[3].logprob < 0


def test_stop_inside_leading_whitespace_does_not_end_the_reply():
    # Rendered without a chat template, the model's reply to this prompt opens with blank lines.
    plain = load_backend("llamacpp", "smollm2-135m-instruct", threads=2, chat_template=False)
    try:
        (result,) = plain.generate([GenerateRequest(FRUITS, ("\n",), 24)])
        (raw,) = plain.generate([GenerateRequest(FRUITS, (), 24)])
    finally:
        plain.close()
    assert raw.text.startswith("\n")  # the situation this test is about
    assert result.text.strip(), "a reply opening with a newline must not be cut to nothing"
    assert "\n" not in result.text.strip()
    assert raw.text.strip().startswith(result.text.strip())


def test_json_schema_replies_always_parse(llama):
    schema = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}, "required": ["label"],
              "additionalProperties": False}
    requests = [GenerateRequest(p, (), 32, temperature=t, seed=s, json_schema=json.dumps(schema))
                for p in (REVIEW, OTHER, FRUITS) for t, s in ((0.0, 0), (1.0, 1), (1.0, 2))]
    for result in llama.generate(requests):
        assert set(json.loads(result.text)) == {"label"}
        assert json.loads(result.text)["label"] in ("positive", "negative")


def run_cli(*argv, timeout=600):
    return subprocess.run([sys.executable, "-m", "taskfit.cli", "eval", *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_cli_json_answers_on_llamacpp_never_fail_to_parse(tmp_path):
    out = tmp_path / "run"
    done = run_cli("--backend", "llamacpp", "--task", "demo", "--mode", "generate", "--limit", "12",
                   "--strategy", "self_consistency", "--strategy-arg", "n=3", "--strategy-arg", "reasoning=false",
                   "--strategy-arg", "answer_format=json", "--no-progress", "--output", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["backend"] == "llamacpp"
    assert results["counts"]["parse_failures"] == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    replies = [reply for s in samples for reply in s["response"]]
    answers = [answer for s in samples for answer in s["path_answers"]]
    assert len(replies) == 36 and all(json.loads(reply)["label"] in ("positive", "negative") for reply in replies)
    assert None not in answers


@pytest.mark.slow
def test_json_schema_answers_parse_for_scores_and_choices(tmp_path, shared_data):
    for task in ("stsb", "truthfulqa_mc1"):
        out = tmp_path / task
        done = run_cli("--backend", "llamacpp", "--task", task, "--data-dir", str(shared_data), "--mode",
                       "generate", "--limit", "10", "--strategy-arg", "answer_format=json", "--no-progress",
                       "--output", str(out))
        assert done.returncode == 0, done.stderr
        assert json.loads((out / "results.json").read_text())["counts"]["parse_failures"] == 0


@pytest.mark.slow
def test_same_prompts_and_close_scores_as_hf(llama):
    hf = load_backend("hf", "smollm2-135m-instruct", threads=2)
    assert llama.render(REVIEW) == hf.render(REVIEW)  # the GGUF's chat template, rendered by llama.cpp
    requests = [LoglikelihoodRequest(p, c) for p in (REVIEW, OTHER) for c in (" positive", " negative", " mixed")]
    ours, theirs = llama.loglikelihood(requests), hf.loglikelihood(requests)
    for a, b in zip(ours, theirs):
        # llama.cpp multiplies Q4_1 weights with 8-bit activations; hf runs the same weights dequantized in fp32
        assert a.logprob == pytest.approx(b.logprob, rel=0.08, abs=0.1)
    for context in range(2):
        ours_best = max(range(3), key=lambda i, c=context: ours[3 * c + i].logprob)
        theirs_best = max(range(3), key=lambda i, c=context: theirs[3 * c + i].logprob)
        assert ours_best == theirs_best


# ------------------------------------------------------------------ openai backend against llama.cpp's server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "taskfit.models.llamacpp", "--port", str(port), "--parallel", "1",
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening"), line
    return proc


def openai_argv(port: int, out, limit: int = 80) -> list[str]:
    return ["--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "smollm2",
            "--task", "demo", "--mode", "generate", "--limit", str(limit), "--batch-size", "8", "--concurrency",
            "1", "--max-retries", "1", "--request-timeout", "5", "--no-cache", "--no-progress",
            "--bootstrap-samples", "100", "--output", str(out)]


def test_openai_backend_survives_a_server_stopped_mid_run(tmp_path):
    port = free_port()
    server = start_server(port)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    run = subprocess.Popen([sys.executable, "-m", "taskfit.cli", "eval", *openai_argv(port, killed)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = killed / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (samples.exists() and samples.read_text().count("\n") >= 32):
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)  # the server dies in the middle of the run
    server.wait()
    _, err = run.communicate(timeout=120)
    assert run.returncode == 3, err
    assert "failed 2 times" in err and "run the same command again" in err
    kept = samples.read_text().count("\n")
    assert kept in (32, 64) and not (killed / "results.json").exists()

    server = start_server(port)
    try:
        resumed = run_cli(*openai_argv(port, killed))
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming" in resumed.stderr
        fresh = run_cli(*openai_argv(port, clean))
        assert fresh.returncode == 0, fresh.stderr
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    got = [json.loads(line) for line in samples.read_text().splitlines()]
    want = [json.loads(line) for line in (clean / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in got] == list(range(80))
    assert [r["prediction"] for r in got] == [r["prediction"] for r in want]
    results = json.loads((killed / "results.json").read_text())
    assert results["model"]["backend"] == "openai" and results["timings"]["resumed_after"] == kept
    assert results["metrics"] == json.loads((clean / "results.json").read_text())["metrics"]


def test_openai_backend_refuses_loglikelihood_on_llamacpp_server(tmp_path):
    port = free_port()
    server = start_server(port)
    try:
        chat = run_cli("--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--task", "demo",
                       "--limit", "2", "--no-cache", "--output", str(tmp_path / "chat"))
        completions = run_cli("--backend", "openai", "--api", "completions", "--base-url",
                              f"http://127.0.0.1:{port}/v1", "--task", "demo", "--limit", "2", "--no-cache",
                              "--output", str(tmp_path / "completions"))
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
    assert chat.returncode == 2 and "--api completions" in chat.stderr
    assert completions.returncode == 2 and "only for generated tokens" in completions.stderr
