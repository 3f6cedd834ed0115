"""The ``hf`` backend: transformers + PyTorch, the reference for log-likelihood and generation.

Speed notes (CPU): log-likelihood requests that share a context (every label verbalizer, choice or
candidate answer of one example) run that context once; the continuations' later tokens run on copies
of its KV cache. Contexts of a batch that begin with the same tokens (system prompt, fixed few-shot
demos) run that prefix once. Contexts are sorted by length and left-padded, and only the last position's logits are
computed for them (``logits_to_keep``), which skips most of the vocabulary projection.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from taskfit.api import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Prompt,
    render_plain,
)
from taskfit.errors import UserError
from taskfit.models import cascade
from taskfit.models.base import Backend, StreamCutter, encode_pair, register_backend
from taskfit.models.forward import PREFIX_STORE_BYTES, ForwardRunner
from taskfit.models.hf_decode import Decoder
from taskfit.models.loading import load_causal_lm, resolve_device
from taskfit.models.options import HFOptions

log = logging.getLogger(__name__)
S = TypeVar("S", list[int], tuple[int, ...])  # token ids, cut as the sequence type they came in

CONTINUATION_CACHE_TOKENS = 16384  # context-cache tokens copied per continuation pass (~0.75 GB for SmolLM2-135M)
GENERATE_SLOTS = 128  # rows decoded at once by default: throughput on a CPU still grows from 64 to 128 rows
GENERATE_MEMORY_SHARE = 0.25  # of the free memory the decoding rows' KV cache may take
CONTINUATION_MEMORY_SHARE = 0.25  # of the free memory (at least PREFIX_STORE_BYTES) finished reasoning's KV may take


def render_with(tokenizer, prompt: Prompt, use_chat_template: bool) -> str:
    """The text a transformers model sees for ``prompt``: its chat template (generation prompt added) and the
    answer prefix, or plain text. Evaluation and training (:mod:`taskfit.prompting.tokens`) both render with this.
    A prompt with no messages is raw text (``/v1/completions``): its answer prefix as it is."""
    if not use_chat_template or not prompt.messages:
        return render_plain(prompt)
    text = tokenizer.apply_chat_template(prompt.as_dicts(), tokenize=False, add_generation_prompt=True)
    return text + prompt.answer_prefix


def encode_with(tokenizer, text: str, use_chat_template: bool) -> list[int]:
    """Token ids of a rendered prompt: a chat template writes its own special tokens; plain text gets whatever
    the tokenizer adds."""
    return tokenizer(text, add_special_tokens=not use_chat_template).input_ids


@register_backend("hf")
class HFBackend(Backend):
    """A causal LM loaded with transformers from a local folder or a hub id."""

    Options = HFOptions

    @classmethod
    def prepare_model(cls, model: str, adapter: Path | None) -> tuple[str, dict[str, Any]]:
        return model, {"adapter": adapter}

    def __init__(
        self,
        model: str | Path,
        *,
        display_name: str | None = None,
        chat_template: bool = True,
        batch_size: int = 16,
        threads: int | None = None,
        progress: bool = False,
        adapter: str | Path | None = None,
        quantize: str = "none",
        device: str = "auto",
        generate_batch_size: int | None = None,
    ):
        import torch

        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.torch = torch
        self.model_id = str(model)
        self.display_name = display_name or self.model_id
        self.batch_size = batch_size
        self.generate_batch_size = generate_batch_size
        self.generate_parallelism = generate_batch_size or GENERATE_SLOTS  # decoder slots refilled within a call
        self.progress = progress
        self.device = resolve_device(device)
        loaded = load_causal_lm(self.model_id, adapter, quantize, self.device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.adapter = str(adapter) if adapter else None
        # Prefix / prompt tuning: a KV cache of the virtual tokens that every forward pass continues.
        self.quantize = quantize
        self.model.eval()
        self.use_chat_template = bool(chat_template and self.tokenizer.chat_template)
        if chat_template and not self.tokenizer.chat_template:
            log.warning("%s has no chat template; prompts are rendered as plain text", self.display_name)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        continuation_bytes = max(PREFIX_STORE_BYTES, int(CONTINUATION_MEMORY_SHARE * free_memory(self.device)))
        self.runner = ForwardRunner(self.model, device=self.device, pad_id=pad_id, virtual=loaded.virtual,
                                    cascade=cascade.enable(self.model), continuation_bytes=continuation_bytes)
        self.stats = self.runner.stats
        self.max_length = (int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
                           - self.runner.virtual_tokens)

    # ------------------------------------------------------------------ rendering and encoding
    def render(self, prompt: Prompt) -> str:
        return render_with(self.tokenizer, prompt, self.use_chat_template)

    def _encode(self, text: str) -> list[int]:
        return encode_with(self.tokenizer, text, self.use_chat_template)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return encode_pair(self._encode, lambda text: self.tokenizer(text, add_special_tokens=False).input_ids,
                           context, continuation)

    # ------------------------------------------------------------------ log-likelihood
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """Requests sharing a context (every label, choice or candidate of one example) run the context once:
        a batched forward pass over the distinct contexts gives each first continuation token, and only the
        rest of each continuation is run on top of its context's KV cache."""
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for index, request in enumerate(requests):
            ctx, cont = self._encode_pair(self.render(request.context), request.continuation)
            if not cont:
                raise UserError(f"continuation {request.continuation!r} encodes to no tokens; use a non-empty answer")
            if not ctx:
                raise UserError("a log-likelihood request needs a non-empty context")
            groups[tuple(ctx)].append((index, cont))
        order = sorted(groups, key=len, reverse=True)
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="loglikelihood", disable=not self.progress, leave=False)
        with self.torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                for index, result in self._score_group_batch(batch, [groups[ctx] for ctx in batch]):
                    results[index] = result
                    bar.update(1)
        bar.close()
        return results  # type: ignore[return-value]

    def _score_group_batch(self, contexts: list[tuple[int, ...]], members: list[list[tuple[int, list[int]]]]):
        torch = self.torch
        longest = max(len(cont) for group in members for _, cont in group)
        room = self.max_length - longest + 1  # context tokens that fit with the longest continuation
        contexts = [self._cut_left(ctx, room) for ctx in contexts]
        cache, mask, logits = self.runner.prefill(contexts, keep_cache=longest > 1)
        first = torch.log_softmax(logits, dim=-1)
        items = [(row, index, cont) for row, group in enumerate(members) for index, cont in group]
        multi = [item for item in items if len(item[2]) > 1]
        later: dict[int, Any] = {}
        # Each continuation row holds a copy of its context's cache: bound the copies by cached tokens.
        chunk = max(1, CONTINUATION_CACHE_TOKENS // mask.shape[1])
        for begin in range(0, len(multi), chunk):
            later.update(self.runner.continuation_pass(cache, mask, multi[begin : begin + chunk]))
        for row, index, cont in items:
            target = torch.tensor(cont)
            rows = first[row][None, :] if len(cont) == 1 else torch.cat([first[row][None, :], later[index]], dim=0)
            picked = rows.gather(-1, target[:, None]).squeeze(-1)
            greedy = bool((rows.argmax(-1) == target).all())
            yield index, LoglikelihoodResult(float(picked.sum()), greedy, len(cont))

    # ------------------------------------------------------------------ generation
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Continuous batching (:mod:`taskfit.models.hf_decode`): results in request order, each row's text the
        same whatever else runs beside it."""
        encoded = [self._cut_left(self._encode(self.render(r.prompt)), self.max_length) for r in requests]
        if not requests:
            return []
        bar = tqdm(total=len(requests), desc="generate", disable=not self.progress, leave=False)
        longest = max(len(ids) + r.max_tokens for ids, r in zip(encoded, requests))
        results = Decoder(self, self.generate_slots(longest), bar=bar).run(encoded, requests)
        bar.close()
        return results

    def generate_slots(self, row_tokens: int) -> int:
        """Rows decoded at once: ``generate_batch_size`` when given, else up to ``GENERATE_SLOTS`` as long as that
        many rows of ``row_tokens`` cached tokens fit in a share of the free memory."""
        if self.generate_batch_size:
            return self.generate_batch_size
        row_bytes = self.runner.kv_bytes_per_token * (row_tokens + self.runner.virtual_tokens)
        return max(1, min(GENERATE_SLOTS, int(GENERATE_MEMORY_SHARE * free_memory(self.device) // row_bytes)))

    def generate_streaming(self, request: GenerateRequest, emit) -> GenerateResult:
        encoded = self._cut_left(self._encode(self.render(request.prompt)), self.max_length)

        def produce(cutter: StreamCutter) -> GenerateResult:
            return Decoder(self, 1, on_text=cutter.update).run([encoded], [request])[0]

        return StreamCutter.streamed(request, emit, produce)

    def text(self, tokens: list[int]) -> str:
        """Generated token ids as text (special tokens left out)."""
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def eos_ids(self) -> set[int]:
        """The token ids that end a generation: the model's and the tokenizer's end tokens."""
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def context_window(self) -> int:
        return self.max_length

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _cut_left(self, ids: S, limit: int) -> S:
        """The last ``limit`` tokens of a prompt that does not fit (a last resort: evaluation shortens long input
        fields first, so only demos or reasoning can push a prompt over); counted in ``stats``."""
        if len(ids) <= limit:
            return ids
        self.stats["prompts_cut_left"] = self.stats.get("prompts_cut_left", 0) + 1
        log.warning("prompt of %d tokens cut to its last %d to fit the context window", len(ids), limit)
        return ids[-limit:]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.display_name,
            "path": self.model_id,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            # the response cache keys on dtype: a quantized model is another model
            "dtype": str(self.model.dtype).replace("torch.", "") + ("+int8-linear" if self.quantize == "int8" else ""),
            "device": self.device,
            "chat_template": self.use_chat_template,
            "threads": self.torch.get_num_threads(),
            **({"adapter": self.adapter} if self.adapter else {}),
        }


def free_memory(device: str) -> int:
    """Bytes free for a KV cache: the GPU's free memory, or the host's available memory."""
    import torch

    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
