"""``taskfit serve``'s settings: the model and its prompt, the HTTP server (which is also the app's settings: limits,
tokens, criteria) and the backend's options."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.models.registry import options_of
from taskfit.settings.common import merged
from taskfit.settings.run import BackendChoice, adapter_field, backend_field, backend_sections
from taskfit.strict import StrictModel, validate


class ServeModelSection(StrictModel):
    model: str = Field("smollm2-135m-instruct", description="known model (see `taskfit models`), hf:<folder>, "
                       "gguf:<file>, or the served model's name on an OpenAI-compatible server (--backend openai)")
    backend: str = backend_field("llamacpp", "where the model runs (llamacpp: fast CPU decoding)")
    adapter: Path | None = adapter_field()
    task: str | None = Field(None, description="serve with this task's prompt, system prompt and answer format "
                                               "(the ones the model was tuned and evaluated with)")
    data_dir: Path | None = Field(None, description="KBQA task without --kb: its split's triples are the knowledge "
                                                    "base (folder laid out as D/<dataset>/<split>.jsonl)")
    split: str = Field("train", description="the split whose triples are the knowledge base (KBQA without --kb)")
    kb: Path | None = Field(None, description="knowledge base: JSONL triples / 's ||| p ||| o' lines (KBQA tasks), "
                                              "or JSONL passages with a 'text' field (retrieved by BM25)")
    top_k: int = Field(5, gt=0, description="passages retrieved per question (KBQA tasks use their own top_k)")
    max_tokens: int | None = Field(None, gt=0, description="answer budget (default: the task's, else 256)")
    temperature: float = Field(0.0, ge=0, description="sampling temperature of the chat page (0: greedy)")
    history_turns: int = Field(6, ge=0, description="earlier turns of a conversation shown to the model")
    arena_adapter: list[Path] = Field([], description="an adapter folder that answers in the arena (/arena) beside "
                                      "the served model: two contestants answer each question blind; votes rank them")
    arena_model: list[str] = Field([], description="a model (same backend) that answers in the arena beside the "
                                   "served model")


class ServeHTTPSection(StrictModel):
    host: str = Field("127.0.0.1", description="address to bind (loopback by default; put a reverse proxy with TLS "
                                               "in front to serve others)", json_schema_extra=OPERATIONAL)
    port: int = Field(8000, ge=0, le=65535, description="port (0: any free one)", json_schema_extra=OPERATIONAL)
    allowed_hosts: list[str] = Field([], description="host names requests may address besides 127.0.0.1, localhost "
                                     "and --host (a name a reverse proxy forwards; '*' any); others get 400, so a "
                                     "web page cannot reach the assistant through DNS rebinding",
                                     json_schema_extra=OPERATIONAL)
    db: Path | None = Field(None, description="SQLite file for conversations and feedback "
                                              "(default $TASKFIT_HOME/assistant.sqlite)")
    admin_token: SecretStr | None = Field(None, description="token for GET /api/export (default "
                                          "$TASKFIT_ADMIN_TOKEN; without one the export endpoint is off)")
    serve_api_key: SecretStr | None = Field(None, description="require this key on /v1 (Authorization: Bearer) "
                                            "(default $TASKFIT_SERVE_API_KEY; none: open on loopback)")
    max_concurrent: int | None = Field(None, gt=0, description="answers generated at once (default: the llamacpp "
                                       "slots, 1 for hf, the concurrency for openai)")
    max_waiting: int = Field(32, ge=0, description="requests queued for a free generation slot before 503 busy")
    wait_timeout: float = Field(60.0, gt=0, description="seconds a request may wait for a slot before 503")
    answer_timeout: float = Field(300.0, gt=0, description="seconds one answer may take before it is cut")
    criteria: list[str] = Field([], description="criteria the page lets users rate each answer on (good / bad), "
                                "exported as tags and filtered by `feedback export --where`; 'default': helpful, "
                                "correct, harmless; none: only thumbs")
    max_question_chars: int = Field(4000, gt=0, description="longest question or message accepted (413 beyond)")
    max_messages: int = Field(64, gt=0, description="most messages in one /v1 request (413 beyond)")
    max_answer_tokens: int = Field(1024, gt=0, description="largest max_tokens a /v1 request may ask for (400 beyond)")

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, names: list[str]) -> list[str]:
        """'default' stands for helpful, correct, harmless; each name once, in order."""
        out: list[str] = []
        for name in names:
            for one in DEFAULT_CRITERIA if name.strip() == "default" else (name.strip(),):
                if not one or len(one) > 64 or not all(ch.isalnum() or ch in "_-" for ch in one):
                    raise ValueError(f"--criteria {name!r}: a criterion is a short name of letters, digits, - or _")
                if one not in out:
                    out.append(one)
        return out

    def admin_secret(self) -> str | None:
        """The admin token: --admin-token, else $TASKFIT_ADMIN_TOKEN (None: the admin routes are off)."""
        return _secret(self.admin_token, "TASKFIT_ADMIN_TOKEN")

    def api_secret(self) -> str | None:
        """The key /v1 requires: --serve-api-key, else $TASKFIT_SERVE_API_KEY (None: /v1 is open)."""
        return _secret(self.serve_api_key, "TASKFIT_SERVE_API_KEY")


DEFAULT_CRITERIA = ("helpful", "correct", "harmless")


def _secret(value: SecretStr | None, env: str) -> str | None:
    return (value.get_secret_value() if value else os.environ.get(env)) or None


class ServeConfig(BackendChoice, ServeHTTPSection, ServeModelSection):
    """Everything ``taskfit serve`` needs (YAML keys = flags)."""

    model_config = BackendChoice.model_config  # a run-time backend's options are extra keys

    @model_validator(mode="after")
    def _arena_adapters_need_a_backend_that_takes_them(self) -> ServeConfig:
        chosen = options_of(self.backend)
        if self.arena_adapter and not chosen.adapters:
            raise UserError(f"--arena-adapter needs a backend that takes adapters, not {self.backend}: "
                            f"{chosen.no_adapter} (--arena-model NAME for a second model on it)")
        return self


SERVE_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("model and prompt", ServeModelSection), ("server", ServeHTTPSection), backend_sections]


def load_serve_config(path: str | Path | None, overrides: dict[str, Any]) -> ServeConfig:
    data, source = merged(path, overrides)
    return validate(ServeConfig, data, source)
