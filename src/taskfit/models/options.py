"""Each backend's options, declared once: the run config, the CLI flags (``taskfit eval --help`` groups them by
backend) and the backend's constructor keywords all come from these models. Light on purpose (pydantic only), so the
CLI can build its flags without importing a backend."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from taskfit.strict import StrictModel

OPERATIONAL = {"operational": True}
"""Field marker: how a run reaches its model, not what it computes (a run may resume with another value)."""


class BackendOptions(StrictModel):
    """What every backend takes. A backend's options class also says, for the CLI and the configs (which read it
    without importing the backend), what the backend is and how it takes an adapter."""

    summary: ClassVar[str] = ""
    """One line for ``--backend``'s help."""
    adapters: ClassVar[str | None] = None
    """How ``--adapter`` reaches the model (help text), or None: the backend cannot take one ..."""
    no_adapter: ClassVar[str] = "merge it first (`taskfit merge`) and load the merged model"
    """... and then what to do instead."""

    batch_size: int = Field(16, gt=0, description="requests per forward pass")
    chat_template: bool = Field(True, description="render prompts with the model's chat template "
                                                  "(--no-chat-template: plain text)")
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all cores)",
                                json_schema_extra=OPERATIONAL)  # speed only: a run may resume with other threads


class HFOptions(BackendOptions):
    """The hf backend (transformers in process)."""

    summary: ClassVar[str] = "transformers in process"
    adapters: ClassVar[str | None] = "applied in process (LoRA / IA3 merged into the weights, bottleneck modules, " \
                                     "prefix / prompt virtual tokens)"

    quantize: Literal["none", "int8"] = Field("none", description="hf backend: int8 dynamic quantization of the "
                                              "linear layers (output layer and MLP down projections kept fp32)",
                                              json_schema_extra={"elsewhere": "the llamacpp backend runs quantized "
                                                                              "GGUF files as they are"})
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="hf backend: where the model runs; auto = "
                                                   "a CUDA GPU when torch sees one (bf16 / fp16 there), else the CPU "
                                                   "(fp32)")
    generate_batch_size: int | None = Field(None, gt=0, description="hf backend: rows decoded at once, refilled "
                                            "as rows finish (default: up to 64, as memory allows)",
                                            json_schema_extra=OPERATIONAL)  # a row's text does not depend on it


class ConcurrencyOption(StrictModel):
    concurrency: int | None = Field(None, gt=0, description="requests in flight (openai; default 4) or llama.cpp "
                                    "server slots (default 8: the fastest of 1, 4, 8 and 16 for batch work on a "
                                    "2-core CPU, benchmarks/results/generation_throughput.md)",
                                    json_schema_extra=OPERATIONAL)


class LlamaCppOptions(BackendOptions, ConcurrencyOption):
    """The llamacpp backend (a GGUF file in process)."""

    summary: ClassVar[str] = "a GGUF file in process (llama.cpp)"
    adapters: ClassVar[str | None] = "merged and exported to a Q8_0 GGUF once (cached under $TASKFIT_HOME/gguf)"


class OpenAIOptions(BackendOptions, ConcurrencyOption):
    """The openai backend (any OpenAI-compatible server)."""

    summary: ClassVar[str] = "an OpenAI-compatible server such as vLLM"
    no_adapter: ClassVar[str] = ("a remote server's model cannot take one; serve the merged model (`taskfit merge`) "
                                 "on that server")

    base_url: str | None = Field(None, description="openai backend: server URL, e.g. http://127.0.0.1:8000/v1 "
                                 "(default $OPENAI_BASE_URL, else OpenAI's)", json_schema_extra=OPERATIONAL)
    api_key: SecretStr | None = Field(None, description="openai backend: API key (default $OPENAI_API_KEY); "
                                      "never written to results", json_schema_extra=OPERATIONAL)
    api: Literal["chat", "completions"] = Field("chat", description="openai backend: endpoint family "
                                                "(log-likelihood needs completions with echo support)")
    request_timeout: float = Field(120.0, gt=0, description="openai backend: seconds per request",
                                   json_schema_extra=OPERATIONAL)
    max_retries: int = Field(5, ge=0, description="openai backend: retries on timeouts, 429 and 5xx",
                             json_schema_extra=OPERATIONAL)
