"""The ``llamacpp`` backend: llama.cpp in this process, reading GGUF files (the embedded model's directly).

The binding is ``xllamacpp`` (a prebuilt wheel that installs in seconds; ``llama-cpp-python`` compiles
llama.cpp for ~7.5 minutes). It runs llama.cpp's own server inside this process on a free loopback port,
so tokenization, chat templates, sampling and grammars are llama.cpp's, and the same code path serves
``python -m taskfit.models.llamacpp`` — an OpenAI-compatible server for other tools and for the tests of
the ``openai`` backend.

- **Generation**: llama.cpp's sampler (temperature, top-p, nothing else), a seed per request, stop strings,
  and the sum of the produced tokens' log-probabilities (llama.cpp reports them before sampling, i.e. at
  temperature 1, as the hf backend does). A stop string met inside the reply's leading whitespace does not
  end the reply (same rule as :func:`~taskfit.models.base.cut_at_stop`): generation goes on after it.
- **Constrained decoding**: ``GenerateRequest.json_schema`` becomes a llama.cpp grammar, so JSON answers
  always parse.
- **Log-likelihood**: llama.cpp's server returns no log-probabilities for prompt tokens, so the continuation
  is *forced*: a grammar of its exact token ids (``root ::= <[id1]> <[id2]> ...``) makes the sampler emit
  them, and the reported log-probabilities are the model's own, before the grammar. The context's KV cache
  is reused between the candidates of one context (``cache_prompt``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskfit.api import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Prompt,
    render_plain,
)
from taskfit.errors import ServerError, UserError
from taskfit.models.base import Backend, StreamCutter, cut_at_stop, encode_pair, map_in_threads, register_backend
from taskfit.models.catalog import resolve_gguf
from taskfit.models.http import RetryPolicy, client, post_with_retries, stream_events
from taskfit.models.options import LlamaCppOptions

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8  # server slots (continuous batching): 8 generated 169 tokens/s, 4 142, 16 162, 1 85 (2 cores)
DEFAULT_SLOT_CONTEXT = 4096  # tokens of context per slot
# The server is in this process, so a failure is not transient -- except a keep-alive connection the server closed
# just as a request went out on it (many concurrent requests, e.g. taskfit serve): that is retried at once.
LOCAL_SERVER = RetryPolicy(timeout=3600, max_retries=2, base_delay=0.01, max_delay=0.1)


def start_server(gguf: str | Path, *, parallel: int = DEFAULT_PARALLEL, slot_context: int = DEFAULT_SLOT_CONTEXT,
                 threads: int | None = None, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
    """Start llama.cpp's server for ``gguf`` inside this process; it listens until the object is dropped."""
    try:
        import xllamacpp
    except ImportError:
        raise UserError("the llamacpp backend needs the xllamacpp package; run `make setup` "
                        "(or `pip install xllamacpp`)") from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel = parallel
    params.n_ctx = parallel * slot_context
    params.cpuparams.n_threads = threads or os.cpu_count() or 1
    params.cpuparams_batch.n_threads = threads or os.cpu_count() or 1
    params.warmup = False
    params.verbosity = -1 if not log.isEnabledFor(logging.DEBUG) else 1
    params.hostnames = [host]
    params.port = port
    if api_key:
        params.api_keys = [api_key]
    try:
        return xllamacpp.Server(params)
    except Exception as exc:  # noqa: BLE001 - the binding raises RuntimeError/ValueError for unreadable models
        raise UserError(f"llama.cpp could not load {gguf}: {exc}") from None


@register_backend("llamacpp")
class LlamaCppBackend(Backend):
    """A GGUF model run by llama.cpp in this process."""

    Options = LlamaCppOptions

    supports_json_schema = True

    @classmethod
    def resolve(cls, spec: str) -> tuple[str, str]:
        return resolve_gguf(spec)

    @classmethod
    def prepare_model(cls, model: str, adapter: Path | None) -> tuple[str, dict[str, Any]]:
        """An adapter merged into its model, or a model folder (``hf:DIR``, as `taskfit align` writes), is exported
        to a Q8_0 GGUF once (:func:`taskfit.models.export.gguf_for`)."""
        if adapter is not None or (model.startswith("hf:") and Path(model[3:]).is_dir()):
            from taskfit.models.export import gguf_for  # torch + gguf-py, only when there is something to export

            return "gguf:" + str(gguf_for(model, adapter)), {}
        return model, {}

    def generation_slots(self) -> int:
        return self.parallel

    def __init__(
        self,
        model: str | Path,
        *,
        display_name: str | None = None,
        chat_template: bool = True,
        batch_size: int = 16,
        threads: int | None = None,
        progress: bool = False,
        concurrency: int | None = None,
        slot_context: int = DEFAULT_SLOT_CONTEXT,
    ):
        concurrency = concurrency or DEFAULT_PARALLEL
        self.path = str(model)
        if not Path(self.path).is_file():
            raise UserError(f"GGUF file {self.path} does not exist")
        self.display_name = display_name or Path(self.path).name
        self.parallel = concurrency  # llama.cpp's server slots
        self.slot_context = slot_context
        self.progress = progress
        self.threads = threads or os.cpu_count() or 1
        self.server = start_server(self.path, parallel=concurrency, slot_context=slot_context, threads=threads)
        self.url = self.server.listening_address.rstrip("/")
        self.http = client(concurrency + 1, LOCAL_SERVER.timeout)  # keep-alive connections to the slots
        props = self._get("/props")
        self.has_chat_template = bool(props.get("chat_template"))
        self.use_chat_template = bool(chat_template and self.has_chat_template)
        if chat_template and not self.has_chat_template:
            log.warning("%s has no chat template; prompts are rendered as plain text", self.display_name)
        self.meta = (self._get("/v1/models").get("data") or [{}])[0].get("meta") or {}
        self._rendered: dict[Prompt, str] = {}
        self._lock = threading.Lock()
        self.stats = {"input_tokens": 0, "cached_tokens": 0, "generated_tokens": 0, "requests": 0}

    # ------------------------------------------------------------------ plumbing
    def _get(self, path: str) -> dict[str, Any]:
        return self.http.get(self.url + path, timeout=60).json()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_with_retries(self.url + path, body, policy=LOCAL_SERVER, http=self.http)

    def _tokenize(self, text: str, add_special: bool) -> list[int]:
        return self._post("/tokenize", {"content": text, "add_special": add_special, "parse_special": True})["tokens"]

    def _encode(self, text: str) -> list[int]:
        # A chat template writes its own special tokens; plain text gets what the model's vocabulary adds.
        return self._tokenize(text, add_special=not self.use_chat_template)

    def _count(self, response: dict[str, Any]) -> None:
        timings = response.get("timings") or {}
        with self._lock:
            self.stats["requests"] += 1
            self.stats["input_tokens"] += int(timings.get("prompt_n", 0))
            self.stats["cached_tokens"] += int(timings.get("cache_n", 0))
            self.stats["generated_tokens"] += int(response.get("tokens_predicted", 0))

    def _fit(self, ids: list[int], room: int) -> list[int]:
        """Keep the last tokens of a prompt so that ``room`` more fit in a slot (the hf backend cuts the same way)."""
        limit = self.slot_context - room
        if len(ids) > limit:
            log.warning("prompt of %d tokens cut to its last %d to fit the context", len(ids), limit)
            with self._lock:
                self.stats["prompts_cut_left"] = self.stats.get("prompts_cut_left", 0) + 1
            return ids[-limit:]
        return ids

    def _pool(self, work, items: Sequence[Any], desc: str, weight=lambda item: 1) -> list[Any]:
        """``work`` over ``items`` on ``parallel`` threads (one per server slot), results in item order."""
        return map_in_threads(work, items, self.parallel, desc, self.progress, weight)

    # ------------------------------------------------------------------ the backend protocol
    def render(self, prompt: Prompt) -> str:
        if not self.use_chat_template or not prompt.messages:  # no messages: raw text (/v1/completions)
            return render_plain(prompt)
        text = self._rendered.get(prompt)
        if text is None:
            text = self._post("/apply-template", {"messages": prompt.as_dicts()})["prompt"]
            self._rendered[prompt] = text
        return text + prompt.answer_prefix

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """Each context's candidates are forced one after another on one slot, so the context is computed once
        and its KV cache reused; different contexts run on the slots in parallel."""
        groups: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[self.render(request.context)].append(index)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)

        def score_group(item: tuple[str, list[int]]) -> None:
            context, members = item
            for index in members:
                results[index] = self._force(context, requests[index].continuation)

        self._pool(score_group, list(groups.items()), "loglikelihood", weight=lambda item: len(item[1]))
        return results  # type: ignore[return-value]

    def _force(self, context: str, continuation: str) -> LoglikelihoodResult:
        ctx, cont = encode_pair(self._encode, lambda text: self._tokenize(text, add_special=False),
                                context, continuation)
        if not cont:
            raise UserError(f"continuation {continuation!r} encodes to no tokens; use a non-empty answer")
        if not ctx:
            raise UserError("a log-likelihood request needs a non-empty context")
        body = {
            "prompt": self._fit(ctx, len(cont)), "n_predict": len(cont), "temperature": 0.0,
            "grammar": "root ::= " + " ".join(f"<[{token}]>" for token in cont),
            "n_probs": 1, "post_sampling_probs": False, "cache_prompt": True,
        }
        response = self._post("/completion", body)
        self._count(response)
        steps = response.get("completion_probabilities") or []
        if [step.get("id") for step in steps] != cont:
            raise ServerError(f"llama.cpp did not follow the forced continuation {continuation!r} "
                              f"(expected tokens {cont}, got {[s.get('id') for s in steps]})")
        logprob = sum(float(step["logprob"]) for step in steps)
        greedy = all(step["top_logprobs"] and step["top_logprobs"][0]["id"] == step["id"] for step in steps)
        return LoglikelihoodResult(logprob=logprob, is_greedy=greedy, n_tokens=len(cont))

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self._pool(self._generate_one, list(requests), "generate")

    def generate_streaming(self, request: GenerateRequest, emit) -> GenerateResult:
        return StreamCutter.streamed(request, emit, lambda cutter: self._generate_one(request, cutter))

    def _generate_one(self, request: GenerateRequest, cutter: StreamCutter | None = None) -> GenerateResult:
        prompt = self._fit(self._encode(self.render(request.prompt)), request.max_tokens)
        body: dict[str, Any] = {
            "temperature": request.temperature, "top_p": request.top_p,
            "top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "seed": request.seed,
            "stop": list(request.stop), "n_probs": 1, "post_sampling_probs": False, "cache_prompt": True,
            "return_tokens": True,
        }
        if request.json_schema:
            body["json_schema"] = json.loads(request.json_schema)
        text, produced, logprob = "", 0, 0.0
        while True:
            step = {**body, "prompt": prompt, "n_predict": request.max_tokens - produced}
            if cutter is None:
                response = self._post("/completion", step)
            else:
                before = text
                response = self._stream("/completion", step, lambda so_far: cutter.update(before + so_far))
            self._count(response)
            text += response.get("content", "")
            produced += int(response.get("tokens_predicted", 0))
            logprob += sum(float(step["logprob"]) for step in response.get("completion_probabilities") or [])
            stop_type = response.get("stop_type")
            word = response.get("stopping_word") or ""
            # A stop string inside the leading whitespace does not end the reply (cut_at_stop's rule): go on
            # after it. The server dropped the stop string from the text, so it is put back.
            if stop_type == "word" and word and not (text + word).strip() and produced < request.max_tokens:
                text += word
                # the tokens the model produced (stop word included), not a re-tokenization of their text: the
                # continuation is the model's own, as a server without this stop would give it
                produced_ids = response.get("tokens") or self._tokenize(response.get("content", "") + word,
                                                                        add_special=False)
                prompt = prompt + list(produced_ids)
                continue
            break
        text, _ = cut_at_stop(text, request.stop)
        reason = "length" if stop_type == "limit" else "stop"
        return GenerateResult(text=text, n_tokens=produced, finish_reason=reason, logprob=logprob)

    def _stream(self, path: str, body: dict[str, Any], on_text) -> dict[str, Any]:
        """POST with ``stream``: llama.cpp answers server-sent events, one per token; ``on_text`` gets the content so
        far after each. Returns what the unstreamed call returns (content, probabilities, the last event's facts)."""
        content, probabilities, tokens, last = "", [], [], {}
        for event in stream_events(self.http, self.url + path, {**body, "stream": True}, policy=LOCAL_SERVER,
                                   who="llama.cpp"):
            probabilities.extend(event.get("completion_probabilities") or [])
            tokens.extend(event.get("tokens") or [])
            if event.get("content"):
                content += event["content"]
                on_text(content)
            last = event
        return {**last, "content": content, "completion_probabilities": probabilities, "tokens": tokens}

    def context_window(self) -> int:
        return self.slot_context

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.display_name,
            "path": self.path,
            "parameters": self.meta.get("n_params"),
            "dtype": "gguf",
            "chat_template": self.use_chat_template,
            "threads": self.threads,
            "parallel": self.parallel,
            "binding": _binding_version(),
        }

    def close(self) -> None:
        """Stop the server (it also stops when the backend is garbage-collected)."""
        self.server = None


def _binding_version() -> str:
    try:
        import xllamacpp

        return f"xllamacpp {xllamacpp.__version__}"
    except Exception:  # noqa: BLE001 - informational only
        return "xllamacpp"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m taskfit.models.llamacpp``: serve a GGUF over llama.cpp's OpenAI-compatible HTTP API."""
    import time

    parser = argparse.ArgumentParser(prog="python -m taskfit.models.llamacpp", description=main.__doc__)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="known model or gguf:<file>")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--api-key", default=os.environ.get("TASKFIT_SERVE_API_KEY"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _, path = resolve_gguf(args.model)
    server = start_server(path, parallel=args.parallel, threads=args.threads, host=args.host, port=args.port,
                          api_key=args.api_key)
    log.info("serving %s at %s (OpenAI-compatible: /v1/completions, /v1/chat/completions)", path,
             server.listening_address)
    print(f"listening {server.listening_address}", flush=True)  # the line a parent process waits for
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
