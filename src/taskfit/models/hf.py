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
from taskfit.models import cascade, kv
from taskfit.models.base import Backend, StreamCutter, encode_pair, register_backend
from taskfit.models.hf_decode import Decoder
from taskfit.models.kv import cache_keyword, cache_of, map_cache
from taskfit.models.loading import load_causal_lm, resolve_device
from taskfit.models.options import HFOptions

log = logging.getLogger(__name__)
S = TypeVar("S", list[int], tuple[int, ...])  # token ids, cut as the sequence type they came in

SHARED_PREFIX_MIN_TOKENS = 8  # a batch's contexts sharing this many leading tokens run them once
CONTINUATION_CACHE_TOKENS = 16384  # context-cache tokens copied per continuation pass (~0.75 GB for SmolLM2-135M)
GENERATE_SLOTS = 128  # rows decoded at once by default: throughput on a CPU still grows from 64 to 128 rows
GENERATE_MEMORY_SHARE = 0.25  # of the free memory the decoding rows' KV cache may take
PREFIX_STORE_BYTES = 512 * 2**20  # KV of shared prompt prefixes kept for the whole run
PREFILL_PASS_TOKENS = 64  # a forward pass's fixed cost, in padded token positions: prefill passes split when cheaper
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
        self.shared_prefix_min_tokens = SHARED_PREFIX_MIN_TOKENS
        self.device = resolve_device(device)
        loaded = load_causal_lm(self.model_id, adapter, quantize, self.device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.adapter = str(adapter) if adapter else None
        # Prefix / prompt tuning: a KV cache of the virtual tokens that every forward pass continues.
        self.virtual = loaded.virtual
        self.virtual_tokens = self.virtual.get_seq_length() if self.virtual is not None else 0
        self.quantize = quantize
        self.model.eval()
        # a shared prefix is read once per batch, not copied into every row (CPU; checked on load)
        self.cascade = cascade.enable(self.model)
        self.use_chat_template = bool(chat_template and self.tokenizer.chat_template)
        if chat_template and not self.tokenizer.chat_template:
            log.warning("%s has no chat template; prompts are rendered as plain text", self.display_name)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048) - self.virtual_tokens
        self.cache_keyword = cache_keyword(self.model)
        self.kv_bytes_per_token = kv.kv_bytes_per_token(self.model.config, self.model.dtype.itemsize)
        self.prefixes = kv.PrefixStore(PREFIX_STORE_BYTES // self.kv_bytes_per_token)
        continuation_bytes = max(PREFIX_STORE_BYTES, int(CONTINUATION_MEMORY_SHARE * free_memory(self.device)))
        self.continuations = kv.ContinuationStore(continuation_bytes // self.kv_bytes_per_token)
        self._previous: list[int] = []  # the last context run: a lone context's shared prefix is found against it
        self.stats = {"input_tokens": 0, "generated_tokens": 0, "forward_passes": 0}

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
        cache, mask, logits = self._prefill(contexts, keep_cache=longest > 1)
        first = torch.log_softmax(logits, dim=-1)
        items = [(row, index, cont) for row, group in enumerate(members) for index, cont in group]
        multi = [item for item in items if len(item[2]) > 1]
        later: dict[int, Any] = {}
        # Each continuation row holds a copy of its context's cache: bound the copies by cached tokens.
        chunk = max(1, CONTINUATION_CACHE_TOKENS // mask.shape[1])
        for begin in range(0, len(multi), chunk):
            later.update(self._continuation_pass(cache, mask, multi[begin : begin + chunk]))
        for row, index, cont in items:
            target = torch.tensor(cont)
            rows = first[row][None, :] if len(cont) == 1 else torch.cat([first[row][None, :], later[index]], dim=0)
            picked = rows.gather(-1, target[:, None]).squeeze(-1)
            greedy = bool((rows.argmax(-1) == target).all())
            yield index, LoglikelihoodResult(float(picked.sum()), greedy, len(cont))

    def _prefill(self, contexts: Sequence[Sequence[int]], keep_cache: bool = True):
        """Run ``contexts`` (token ids, one row each); returns the KV cache (``None`` unless ``keep_cache``), the
        attention mask over its columns, and each row's last-position logits (fp32), rows in the order given.

        A prefix that every context begins with runs once per run: the prefix store gives it when it holds one;
        otherwise contexts sharing at least ``shared_prefix_min_tokens`` leading tokens (with each other, or a lone
        context with the previous call's, as an assistant's system prompt) run them once here and store them. Every
        row keeps at least its last token of its own. Suffixes are left-padded between prefix and suffix (the pads
        masked, positions counting real tokens only), so every row ends on a real token and only the last
        position's logits are computed, which skips most of the vocabulary projection.

        Rows whose own token counts differ widely (reasoning that re-tokenized differently from how it was generated
        beside answers that continue theirs) run in separate passes of similar lengths
        (:func:`~taskfit.models.kv.length_buckets`), so a long row does not pad every short one to its length."""
        torch = self.torch
        rows = len(contexts)
        shortest = min(len(ctx) for ctx in contexts) - 1
        others = contexts if rows > 1 else [contexts[0], self._previous]
        shared = min(kv.common_prefix_length(others), shortest)
        self._previous = list(contexts[-1])
        starts = self._continued(contexts)
        if starts is None:
            hit = self.prefixes.longest(contexts[0], shortest if rows == 1 else shared)
            start, prefix = hit if hit is not None else (0, None)
            if shared - start >= self.shared_prefix_min_tokens:
                prefix, start = self._run_prefix(contexts[0], start, shared, prefix), shared
            starts = [(start, prefix)] * rows
        buckets = kv.length_buckets([len(ctx) - start for ctx, (start, _) in zip(contexts, starts)],
                                    PREFILL_PASS_TOKENS)
        if len(buckets) == 1:
            return self._prefill_part(contexts, starts, keep_cache)
        parts = [self._prefill_part([contexts[i] for i in bucket], [starts[i] for i in bucket], keep_cache)
                 for bucket in buckets]
        back = torch.tensor(sorted(range(rows), key=[i for bucket in buckets for i in bucket].__getitem__))
        cache, mask = kv.join([(cache, mask) for cache, mask, _ in parts])
        logits = torch.cat([logits for _, _, logits in parts]).index_select(0, back)
        if cache is None:
            return None, mask.index_select(0, back), logits
        cache, mask = kv.select_rows(cache, mask, back)
        return cache, mask, logits

    def _prefill_part(self, contexts: Sequence[Sequence[int]], starts: list[tuple[int, Any]], keep_cache: bool):
        """One forward pass of ``_prefill``: every row begins with the same cached prefix (its cache expanded, no
        copy), or each continues a cache of its own."""
        torch = self.torch
        rows = len(contexts)
        virtual = self.virtual_tokens
        start, prefix = starts[0]
        if any(s != start or c is not prefix for s, c in starts):
            return self._prefill_rows(contexts, starts, keep_cache)
        ids, own_mask, own_positions = self._left_pad([ctx[start:] for ctx in contexts])
        mask = torch.cat([torch.ones((rows, virtual + start), dtype=torch.long), own_mask], dim=1)
        shared = None
        if self.cascade and (start or virtual):  # the prefix stays out of the cache, read once by cascade attention
            cache = None
            shared = [(k[:, :, : virtual + start], v[:, :, : virtual + start])
                      for k, v in kv.layers(prefix if start else self.virtual)]
        elif start:
            # a stored continuation may hold more columns than the beginning this row shares with it
            cache = map_cache(prefix, lambda t: t[:, :, : virtual + start, :].expand(rows, -1, -1, -1))
        else:
            cache = self._virtual_cache(rows)
        return self._own_pass(cache, ids, mask, own_mask, virtual + start + own_positions, start * rows, keep_cache,
                              shared)

    def _continued(self, contexts: Sequence[Sequence[int]]) -> list[tuple[int, Any]] | None:
        """Each context's longest stored beginning — a finished generation it continues, or a stored prefix — as
        (tokens, cache); ``None`` when no context continues a stored generation (the shared-prefix path then runs).
        Every row keeps at least its last token of its own."""
        if not self.continuations.entries:
            return None
        found = [self.continuations.longest(ctx, len(ctx) - 1) for ctx in contexts]
        if not any(hit is not None and hit[0] >= self.shared_prefix_min_tokens for hit in found):
            return None
        starts = []
        for ctx, hit in zip(contexts, found):
            prefix = self.prefixes.longest(ctx, len(ctx) - 1)
            if hit is None or hit[0] < self.shared_prefix_min_tokens or (prefix is not None and prefix[0] >= hit[0]):
                hit = prefix
            starts.append(hit if hit is not None else (0, None))
        return starts

    def _prefill_rows(self, contexts: Sequence[Sequence[int]], starts: list[tuple[int, Any]], keep_cache: bool):
        """``_prefill`` where each row continues a cache of its own (``starts``: tokens already cached, the cache):
        the caches are joined right-aligned, each row's own tokens left-padded after them."""
        torch = self.torch
        virtual = self.virtual_tokens
        template = next(cache for _, cache in starts if cache is not None)
        parts = []
        for start, cache in starts:
            if cache is None:
                cache = self._virtual_cache(1) if virtual else template
            parts.append((kv.first_columns(cache, virtual + start), torch.ones((1, virtual + start), dtype=torch.long)))
        cache, mask = kv.join(parts)
        ids, own_mask, own_positions = self._left_pad([ctx[start:] for ctx, (start, _) in zip(contexts, starts)])
        mask = torch.cat([mask, own_mask], dim=1)
        begin = torch.tensor([[virtual + start] for start, _ in starts])
        return self._own_pass(cache, ids, mask, own_mask, begin + own_positions, sum(start for start, _ in starts),
                              keep_cache)

    def _own_pass(self, cache, ids, mask, own_mask, positions, reused: int, keep_cache: bool, shared=None):
        """The forward pass of the rows' own tokens on ``cache`` (``reused`` tokens taken from it), counted in the
        stats; returns the cache (``None`` unless ``keep_cache``: the model grows a cache it is given even without
        ``use_cache``), the mask and each row's last-position logits (fp32).

        ``shared``: per-layer (keys, values) of a prefix every row continues, read once for the batch by cascade
        attention (:mod:`~taskfit.models.cascade`) instead of sitting in ``cache``; a kept cache gets it in front."""
        extra = {} if shared is None else {"shared_prefix": shared}
        out, cache = self._forward(cache, input_ids=ids, attention_mask=mask if shared is None else own_mask,
                                   use_cache=keep_cache, logits_to_keep=1, position_ids=positions, **extra)
        if shared is not None and keep_cache:
            rows = ids.shape[0]
            cache = cache_of([(self.torch.cat([pk.expand(rows, -1, -1, -1), k], dim=2),
                               self.torch.cat([pv.expand(rows, -1, -1, -1), v], dim=2))
                              for (pk, pv), (k, v) in zip(shared, kv.layers(cache))])
        self.stats["prefix_tokens_reused"] = self.stats.get("prefix_tokens_reused", 0) + reused
        self.stats["input_tokens"] += int(own_mask.sum())
        self.stats["forward_passes"] += 1
        return (cache if keep_cache else None), mask, out.logits[:, -1, :].float()

    def _run_prefix(self, ids: Sequence[int], start: int, end: int, base):
        """Run ``ids[start:end]`` on top of ``base`` (the stored cache of ``ids[:start]``, or nothing), store the
        cache of ``ids[:end]`` and return it. The stored caches are never grown in place (a forward pass gets a
        copy of the structure)."""
        torch = self.torch
        cache = map_cache(base, lambda t: t) if base is not None else self._virtual_cache(1)
        positions = self.virtual_tokens + torch.arange(start, end)[None, :]
        _, cache = self._forward(cache, input_ids=torch.tensor([list(ids[start:end])]), position_ids=positions,
                                 use_cache=True, logits_to_keep=1)
        self.stats["input_tokens"] += end - start
        self.stats["forward_passes"] += 1
        self.prefixes.put(ids[:end], cache)
        return cache

    def _continuation_pass(self, cache, ctx_mask, items: list[tuple[int, int, list[int]]]) -> dict[int, Any]:
        """Log-probs of continuation tokens 2..n of each item, run on a copy of its context's cache rows."""
        torch = self.torch
        rows = torch.tensor([row for row, _, _ in items])
        ids, cont_mask = self._right_pad([cont[:-1] for _, _, cont in items])
        width = ids.shape[1]
        selected = map_cache(cache, lambda t: t.index_select(0, rows.to(t.device)))
        mask = torch.cat([ctx_mask.index_select(0, rows), cont_mask], dim=1)
        start = ctx_mask.sum(-1).index_select(0, rows)[:, None]
        positions = start + torch.arange(width)[None, :]
        out, _ = self._forward(selected, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        self.stats["input_tokens"] += int(cont_mask.sum())
        self.stats["forward_passes"] += 1
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        return {index: logprobs[i, : len(cont) - 1] for i, (_, index, cont) in enumerate(items)}

    def _right_pad(self, batch: Sequence[Sequence[int]]):
        """Right-padded ids and attention mask (sequences that continue a cached context)."""
        torch = self.torch
        ids = torch.full((len(batch), max(len(seq) for seq in batch)), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(list(seq))
            mask[row, : len(seq)] = 1
        return ids, mask

    def _left_pad(self, batch: Sequence[Sequence[int]]):
        """Left-padded ids, attention mask and position ids (counting from each row's first real token)."""
        torch = self.torch
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(list(ids))
            mask[row, width - len(ids) :] = 1
        return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _virtual_cache(self, rows: int):
        """A fresh KV cache holding the adapter's virtual tokens for ``rows`` rows (None without them)."""
        if self.virtual is None:
            return None
        return map_cache(self.virtual, lambda t: t.expand(rows, -1, -1, -1))

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
        row_bytes = self.kv_bytes_per_token * (row_tokens + self.virtual_tokens)
        return max(1, min(GENERATE_SLOTS, int(GENERATE_MEMORY_SHARE * free_memory(self.device) // row_bytes)))

    def generate_streaming(self, request: GenerateRequest, emit) -> GenerateResult:
        encoded = self._cut_left(self._encode(self.render(request.prompt)), self.max_length)

        def produce(cutter: StreamCutter) -> GenerateResult:
            return Decoder(self, 1, on_text=cutter.update).run([encoded], [request])[0]

        return StreamCutter.streamed(request, emit, produce)

    def _text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _forward(self, cache, **inputs):
        """One forward pass given a KV cache (or None) under the keyword this transformers version takes; returns the
        output (its logits as fp32 on the CPU, where scoring and sampling happen) and the cache it carries (left on
        the model's device)."""
        if self.device != "cpu":
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        out = self.model(**inputs, **{self.cache_keyword: cache})
        if self.device != "cpu":
            out.logits = out.logits.float().cpu()
        return out, getattr(out, self.cache_keyword, None)

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
