"""A backend is one class and its registry line: a toy backend written here (and nothing else) shows up in the CLI's
help, is validated in run and serve configs, is refused with another backend's options, evaluates a task and
serves the assistant."""

from __future__ import annotations

import json
from typing import ClassVar

import httpx
import pytest
from pydantic import Field
from tests.serving import chat, running

from taskfit.api import GenerateResult, LoglikelihoodResult
from taskfit.cli import build_parser, main
from taskfit.errors import UserError
from taskfit.models.base import BACKENDS, Backend, register_backend
from taskfit.models.options import BackendOptions
from taskfit.settings import load_run_config, load_serve_config


class ToyOptions(BackendOptions):
    summary: ClassVar[str] = "a toy that echoes"
    toy_level: int = Field(1, gt=0, description="toy backend: how loudly it echoes")


class Toy(Backend):
    """Scores a continuation by its length, answers by echoing the question's start."""

    Options = ToyOptions

    @classmethod
    def resolve(cls, spec: str) -> tuple[str, str]:
        return spec, spec

    def __init__(self, model: str, *, display_name: str | None = None, toy_level: int = 1, **options):
        self.model, self.level, self.options = model, toy_level, options

    def render(self, prompt) -> str:
        return "\n".join(m.content for m in prompt.messages) + prompt.answer_prefix

    def loglikelihood(self, requests):
        return [LoglikelihoodResult(-float(len(r.continuation)), False, 1) for r in requests]

    def generate(self, requests):
        return [GenerateResult(f"echo{'!' * self.level} {r.prompt.messages[-1].content[:12]}", 3, "stop")
                for r in requests]

    def describe(self):
        return {"backend": self.name, "level": self.level}


@pytest.fixture
def toy():
    register_backend("toy")(Toy)  # the registry line
    yield Toy
    BACKENDS.pop("toy")


def test_the_toy_is_listed_in_help_with_its_options(toy):
    helps = {name: parser.format_help() for name, parser in build_parser()._subparsers._group_actions[0].choices
             .items() if name in ("eval", "serve", "synth")}
    for name, text in helps.items():
        assert "toy backend options" in text and "--toy-level" in text, name
        assert "toy (a toy that echoes)" in " ".join(text.split()), name


def test_run_and_serve_configs_validate_the_toys_options(toy):
    config = load_run_config(None, {"task": "sst2", "backend": "toy", "toy_level": "3"})
    assert config.toy_level == 3 and config.backend_options()["toy_level"] == 3
    assert load_run_config(None, {"task": "sst2", "backend": "toy"}).toy_level == 1  # its default
    assert load_serve_config(None, {"backend": "toy", "toy_level": 2}).backend_options()["toy_level"] == 2
    for load, base in ((load_run_config, {"task": "sst2"}), (load_serve_config, {})):
        with pytest.raises(UserError, match=r"key 'toy_level' has invalid value 0"):
            load(None, {**base, "backend": "toy", "toy_level": 0})
        with pytest.raises(UserError, match=r"--toy-level works with the toy backend, not hf"):
            load(None, {**base, "backend": "hf", "toy_level": 2})
        with pytest.raises(UserError, match=r"--quantize works with the hf backend, not toy"):
            load(None, {**base, "backend": "toy", "quantize": "int8"})
        with pytest.raises(UserError, match=r"--adapter works with the hf / llamacpp backend, not toy"):
            load(None, {**base, "backend": "toy", "adapter": "runs/lora"})
    with pytest.raises(UserError, match=r"unknown key 'toy_levle'"):
        load_run_config(None, {"task": "sst2", "backend": "toy", "toy_levle": 2})


def test_the_toy_evaluates_a_task(toy, tmp_path, capsys):
    assert main(["eval", "--task", "demo", "--backend", "toy", "--model", "echo-1", "--toy-level", "2", "--limit",
                 "4", "--no-cache", "--output", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"]["level"] == 2 and results["config"]["toy_level"] == 2
    assert results["counts"]["n"] == 4 and "--backend toy --output" in results["command"]
    assert "--toy-level 2" in results["command"]  # the command that reproduces the run


def test_the_toy_serves_the_assistant(toy, tmp_path):
    from taskfit.serve import build_app

    app = build_app(load_serve_config(None, {"backend": "toy", "model": "echo-1", "toy_level": 3,
                                             "db": str(tmp_path / "a.sqlite")}))
    with running(app) as base, httpx.Client() as http:
        answer = chat(http, base, "what is the capital of France?")
        assert answer["done"]["answer"] == "".join(answer["deltas"]) == "echo!!! what is the "
        health = http.get(f"{base}/healthz").json()
        assert (health["backend"], health["model"], health["generation"]["slots"]) == ("toy", "echo-1", 1)
