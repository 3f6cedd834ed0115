"""vLLM, the engine users serve with: one real `vllm` OpenAI-compatible server (the CPU build from .venv-vllm, the
embedded model's fp32 folder) for this module, and taskfit's openai backend, CLI and assistant against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from taskfit.evaluation import evaluate
from taskfit.models.catalog import resolve_model
from taskfit.models.vllm_server import start_vllm, vllm_python
from taskfit.settings import RunConfig

pytestmark = pytest.mark.vllm
MODEL = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    if vllm_python() is None:
        why = "vLLM is not set up: no .venv-vllm (make vllm)"
        if os.environ.get("TASKFIT_STRICT") == "1":
            pytest.fail(why)
        pytest.skip(why)
    _, folder = resolve_model(MODEL)
    server = start_vllm(folder, served_name=MODEL, log_path=tmp_path_factory.mktemp("vllm") / "server.log")
    yield server
    server.stop()


def run(tmp_path, name, shared, backend, **config):
    options = {"base_url": backend.url, "api_key": "none"} if not isinstance(backend, str) else {}
    kind = "openai" if options else backend
    cfg = RunConfig(task="sst2", data_dir=shared, limit=config.pop("limit", 40), backend=kind, model=MODEL,
                    output=tmp_path / name, cache=False, bootstrap_samples=0, **options, **config)
    results = evaluate(cfg, progress=False)
    samples = [json.loads(line) for line in (tmp_path / name / "samples.jsonl").read_text().splitlines()]
    return results, samples


def test_loglikelihood_through_vllm_agrees_with_the_hf_backend(vllm, shared_data, tmp_path):
    """--api completions sends the prompt as plain text and reads vLLM's prompt log-probabilities (echo); the hf
    backend without the chat template scores the same text. Both fp32: the same predictions."""
    _, remote = run(tmp_path, "vllm", shared_data, vllm, api="completions", chat_template=False)
    _, local = run(tmp_path, "hf", shared_data, "hf", chat_template=False)
    agree = sum(a["prediction"] == b["prediction"] for a, b in zip(remote, local))
    gap = max(abs(a["response"][k] - b["response"][k]) for a, b in zip(remote, local) for k in a["response"])
    assert [s["prompt"] for s in remote] == [s["prompt"] for s in local]
    assert agree >= 39, f"agreement {agree}/40, largest log-probability difference {gap:.4f}"
    assert gap < 0.05


def test_generation_through_vllm_chat_and_completions(vllm, shared_data, tmp_path):
    for api in ("chat", "completions"):
        results, samples = run(tmp_path, f"cot-{api}", shared_data, vllm, api=api, limit=4, mode="generate",
                               strategy="cot", strategy_args={"max_reasoning_tokens": 32})
        assert results["counts"]["n"] == 4 and all(s["rationale"] and s["generated_tokens"] for s in samples)
        if api == "chat":  # plain-text prompts (completions) leave this small chat model answering badly
            assert sum(s["parse_ok"] for s in samples) >= 3
    sc = {"n": 3, "temperature": 1.0, "max_reasoning_tokens": 24}
    _, first = run(tmp_path, "sc1", shared_data, vllm, api="chat", limit=3, mode="generate",
                   strategy="self_consistency", strategy_args=sc)
    _, again = run(tmp_path, "sc2", shared_data, vllm, api="chat", limit=3, mode="generate",
                   strategy="self_consistency", strategy_args=sc)
    paths = [tuple(s["rationales"]) for s in first]
    assert all(len(set(p)) > 1 for p in paths)  # seeded paths differ from each other ...
    assert paths == [tuple(s["rationales"]) for s in again]  # ... and are the same on a rerun
    results, samples = run(tmp_path, "json", shared_data, vllm, api="chat", limit=6, mode="generate",
                           strategy_args={"answer_format": "json"})
    assert results["counts"]["parse_failures"] == 0  # response_format: a JSON schema vLLM enforces
    assert all(s["prediction"] in ("positive", "negative") for s in samples)


def test_the_assistant_streams_from_vllm(vllm, tmp_path):
    from serving import chat, free_port, start_process, write_kb

    port = free_port()
    kb = write_kb(tmp_path / "kb.jsonl", [("高等数学", "出版社", "武汉大学出版社")])
    process = start_process(["--task", "nlpcc_kbqa", "--kb", str(kb), "--backend", "openai", "--base-url", vllm.url,
                             "--api-key", "none", "--model", MODEL, "--db", str(tmp_path / "fb.sqlite")], port)
    try:
        with httpx.Client() as http:
            answer = chat(http, f"http://127.0.0.1:{port}", "《高等数学》是哪个出版社出版的？")
        assert len(answer["deltas"]) >= 2 and "".join(answer["deltas"]) == answer["done"]["answer"]
        assert "高等数学 | 出版社 | 武汉大学出版社" in answer["meta"]["sources"]
    finally:
        process.terminate()
        process.wait(30)


def test_a_run_cut_by_vllm_dying_resumes_when_it_is_back(vllm, shared_data, tmp_path):
    """The server killed mid-run: exit 3, the finished chunks kept; the same command finishes when vLLM is back."""
    out = tmp_path / "cut"
    argv = [sys.executable, "-m", "taskfit.cli", "eval", "--task", "sst2", "--data-dir", str(shared_data),
            "--limit", "160", "--mode", "generate", "--backend", "openai", "--api", "chat", "--base-url", vllm.url,
            "--api-key", "none", "--model", MODEL, "--no-cache", "--max-retries", "1", "--request-timeout", "20",
            "--concurrency", "4", "--output", str(out)]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = out / "samples.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (samples.is_file() and samples.read_text().count("\n") >= 32):
        time.sleep(0.5)
    port = int(vllm.url.rsplit(":", 1)[1].split("/")[0])
    vllm.kill()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 3, output[-2000:]
    kept = samples.read_text().count("\n")
    assert 32 <= kept < 160 and not (out / "results.json").exists()
    _, folder = resolve_model(MODEL)
    back = start_vllm(folder, port=port, served_name=MODEL, log_path=vllm.log_path.with_name("server2.log"))
    vllm.process = back.process  # the module's server is this one now (stopped at the end)
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["n"] == 160 and results["timings"]["resumed_after"] >= kept - 1
