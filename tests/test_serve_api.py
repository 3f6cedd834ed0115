"""The server's /v1 API under a schema fuzzer, and `taskfit eval --backend openai` pointed at `taskfit serve`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from serving import running
from taskfit.models.registry import load_backend
from taskfit.serve.app import create_app
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    loaded = load_backend("llamacpp", "smollm2-135m-instruct", concurrency=2, threads=2)
    yield loaded
    loaded.close()


def test_a_schema_fuzzer_finds_no_server_error(backend, tmp_path):
    settings = ServeHTTPSection(admin_token="tok", max_answer_tokens=4, max_question_chars=200, max_messages=4)
    app = create_app(Assistant(backend, model="m", max_tokens=4), Store(tmp_path / "a.sqlite"), Gate(2, 32, 60),
                     settings)
    with running(app) as base:
        run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--checks",
                              "not_a_server_error", "--max-examples", "10", "--workers", "1", "--no-color",
                              "--request-timeout", "120"],
                             capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert tested and int(tested.group(1)) >= 9, run.stdout[-2000:]  # every operation of the OpenAPI document
    assert re.search(r"\d+ generated, \d+ passed", run.stdout)


def test_eval_through_serve_gives_the_predictions_of_llamacpp_directly(backend, shared_data, tmp_path):
    app = create_app(Assistant(backend, model="smollm2-135m-instruct"), Store(tmp_path / "a.sqlite"), Gate(2, 32, 60),
                     ServeHTTPSection())
    common = ["eval", "--task", "sst2", "--data-dir", str(shared_data), "--split", "dev", "--limit", "24", "--mode",
              "generate", "--no-cache", "--no-progress"]
    with running(app) as base:
        served = subprocess.run([sys.executable, "-m", "taskfit.cli", *common, "--backend", "openai", "--base-url",
                                 f"{base}/v1", "--api-key", "none", "--output", str(tmp_path / "served")],
                                capture_output=True, text=True, timeout=600)
    assert served.returncode == 0, served.stderr[-2000:]
    direct = subprocess.run([sys.executable, "-m", "taskfit.cli", *common, "--backend", "llamacpp", "--threads", "2",
                             "--output", str(tmp_path / "direct")], capture_output=True, text=True, timeout=600)
    assert direct.returncode == 0, direct.stderr[-2000:]

    def predictions(folder):
        rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
        return [(r["index"], r["prediction"]) for r in sorted(rows, key=lambda r: r["index"])]

    assert predictions(tmp_path / "served") == predictions(tmp_path / "direct")
    assert len(predictions(tmp_path / "direct")) == 24


def test_an_adapter_is_exported_to_gguf_once_and_served_by_llamacpp(tmp_path, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    from taskfit.models.catalog import resolve_model
    from taskfit.models.loading import load_causal_lm
    from taskfit.serve.assistant import load_assistant
    from taskfit.settings import ServeConfig

    monkeypatch.setenv("TASKFIT_HOME", str(tmp_path / "home"))
    base = load_causal_lm(resolve_model("smollm2-135m-instruct")[1]).model
    torch.manual_seed(0)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    config = ServeConfig(adapter=tmp_path / "adapter", threads=2)
    first = load_assistant(config)
    (exported,) = (tmp_path / "home" / "gguf").glob("*.gguf")
    assert first.backend.path == str(exported) and first.adapter == str(tmp_path / "adapter")
    stamp = exported.stat().st_mtime_ns
    first.backend.close()
    second = load_assistant(config)  # the same adapter: the same file, not exported again
    assert second.backend.path == str(exported) and exported.stat().st_mtime_ns == stamp
    second.backend.close()
