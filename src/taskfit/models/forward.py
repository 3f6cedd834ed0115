"""The hf backend's forward passes: padding, the KV caches rows continue (a prompt prefix shared across the run, a
finished generation a later request continues, an adapter's virtual tokens), and one forward pass under the cache
keyword this transformers version takes. Log-likelihood scoring (:class:`~taskfit.models.hf.HFBackend`) and
continuous-batching generation (:class:`~taskfit.models.hf_decode.Decoder`) both run through one
:class:`ForwardRunner`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.models import kv
from taskfit.models.kv import cache_keyword, cache_of, map_cache

SHARED_PREFIX_MIN_TOKENS = 8  # a batch's contexts sharing this many leading tokens run them once
PREFIX_STORE_BYTES = 512 * 2**20  # KV of shared prompt prefixes kept for the whole run
PREFILL_PASS_TOKENS = 64  # a forward pass's fixed cost, in padded token positions: prefill passes split when cheaper


class ForwardRunner:
    """A loaded model's forward passes and the caches they continue. ``stats`` counts tokens and passes."""

    def __init__(self, model, *, device: str, pad_id: int, virtual, cascade: bool, continuation_bytes: int):
        import torch

        self.torch, self.model, self.device, self.pad_id = torch, model, device, pad_id
        # Prefix / prompt tuning: a KV cache of the virtual tokens that every forward pass continues.
        self.virtual = virtual
        self.virtual_tokens = virtual.get_seq_length() if virtual is not None else 0
        self.cascade = cascade  # a shared prefix is read once per batch, not copied into every row
        self.cache_keyword = cache_keyword(model)
        self.kv_bytes_per_token = kv.kv_bytes_per_token(model.config, model.dtype.itemsize)
        self.shared_prefix_min_tokens = SHARED_PREFIX_MIN_TOKENS
        self.prefixes = kv.PrefixStore(PREFIX_STORE_BYTES // self.kv_bytes_per_token)
        self.continuations = kv.ContinuationStore(continuation_bytes // self.kv_bytes_per_token)
        self._previous: list[int] = []  # the last context run: a lone context's shared prefix is found against it
        self.stats: dict[str, int] = {"input_tokens": 0, "generated_tokens": 0, "forward_passes": 0}

    def prefill(self, contexts: Sequence[Sequence[int]], keep_cache: bool = True):
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
        """One forward pass of ``prefill``: every row begins with the same cached prefix (its cache expanded, no
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
            cache = self.virtual_cache(rows)
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
        """``prefill`` where each row continues a cache of its own (``starts``: tokens already cached, the cache):
        the caches are joined right-aligned, each row's own tokens left-padded after them."""
        torch = self.torch
        virtual = self.virtual_tokens
        template = next(cache for _, cache in starts if cache is not None)
        parts = []
        for start, cache in starts:
            if cache is None:
                cache = self.virtual_cache(1) if virtual else template
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
        out, cache = self.forward(cache, input_ids=ids, attention_mask=mask if shared is None else own_mask,
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
        cache = map_cache(base, lambda t: t) if base is not None else self.virtual_cache(1)
        positions = self.virtual_tokens + torch.arange(start, end)[None, :]
        _, cache = self.forward(cache, input_ids=torch.tensor([list(ids[start:end])]), position_ids=positions,
                                 use_cache=True, logits_to_keep=1)
        self.stats["input_tokens"] += end - start
        self.stats["forward_passes"] += 1
        self.prefixes.put(ids[:end], cache)
        return cache

    def continuation_pass(self, cache, ctx_mask, items: list[tuple[int, int, list[int]]]) -> dict[int, Any]:
        """Log-probs of continuation tokens 2..n of each item, run on a copy of its context's cache rows."""
        torch = self.torch
        rows = torch.tensor([row for row, _, _ in items])
        ids, cont_mask = self._right_pad([cont[:-1] for _, _, cont in items])
        width = ids.shape[1]
        selected = map_cache(cache, lambda t: t.index_select(0, rows.to(t.device)))
        mask = torch.cat([ctx_mask.index_select(0, rows), cont_mask], dim=1)
        start = ctx_mask.sum(-1).index_select(0, rows)[:, None]
        positions = start + torch.arange(width)[None, :]
        out, _ = self.forward(selected, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
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

    def virtual_cache(self, rows: int):
        """A fresh KV cache holding the adapter's virtual tokens for ``rows`` rows (None without them)."""
        if self.virtual is None:
            return None
        return map_cache(self.virtual, lambda t: t.expand(rows, -1, -1, -1))

    def forward(self, cache, **inputs):
        """One forward pass given a KV cache (or None) under the keyword this transformers version takes; returns the
        output (its logits as fp32 on the CPU, where scoring and sampling happen) and the cache it carries (left on
        the model's device)."""
        if self.device != "cpu":
            inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        out = self.model(**inputs, **{self.cache_keyword: cache})
        if self.device != "cpu":
            out.logits = out.logits.float().cpu()
        return out, getattr(out, self.cache_keyword, None)
