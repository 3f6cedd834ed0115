"""KV-cache rows as data: pick, pad, join and trim the rows of a transformers ``DynamicCache``, and a run-wide store
of prefix caches.

A batch cache here is always *right-aligned*: every row's real tokens end at the last column, and an attention mask
(rows x columns, 1 = real) says which columns of a row hold real tokens. Rows may have masked columns inside (pads
between a shared prefix and a row's own suffix); only the mask tells. Rows that joined a batch later are padded on
the left, and columns no row uses any more are cut from the left, so the cache is as wide as its longest row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from taskfit.adapters.apply import map_cache


def layers(cache) -> list[tuple]:
    """(keys, values) per layer, each rows x heads x columns x head size."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def from_layers(tensors: Sequence[tuple]):
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(tensors):
        cache.update(keys, values, index)
    return cache


def select_rows(cache, mask, rows):
    """The cache and mask of the given rows (a LongTensor of row indices; repeats copy a row)."""
    picked = map_cache(cache, lambda t: t.index_select(0, rows.to(t.device)))
    return picked, mask.index_select(0, rows)


def join(parts: Sequence[tuple]):
    """One right-aligned batch from (cache, mask) parts: each part left-padded (masked zeros) to the widest, rows
    stacked in order."""
    import torch

    width = max(mask.shape[1] for _, mask in parts)
    masks, per_part = [], []
    for cache, mask in parts:
        grow = width - mask.shape[1]
        masks.append(torch.nn.functional.pad(mask, (grow, 0)))
        per_part.append([(_pad_columns(k, grow), _pad_columns(v, grow)) for k, v in layers(cache)])
    joined = [(torch.cat([part[i][0] for part in per_part]), torch.cat([part[i][1] for part in per_part]))
              for i in range(len(per_part[0]))]
    return from_layers(joined), torch.cat(masks)


def _pad_columns(tensor, grow: int):
    if not grow:
        return tensor
    import torch

    return torch.nn.functional.pad(tensor, (0, 0, grow, 0))


def trim(cache, mask):
    """Cut the leading columns no row attends to any more (views: no copy)."""
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else mask.shape[1]
    if first == 0:
        return cache, mask
    return map_cache(cache, lambda t: t[:, :, first:, :]), mask[:, first:]


def kv_bytes_per_token(config, dtype_bytes: int = 4) -> int:
    """Bytes of KV cache one token takes in every layer (keys + values) of a transformers model config."""
    text = getattr(config, "text_config", None) or config
    layers_n = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 0) or 0)
    kv_heads = int(getattr(text, "num_key_value_heads", 0) or heads)
    head_dim = int(getattr(text, "head_dim", 0) or (getattr(text, "hidden_size", 0) // max(heads, 1)))
    return max(1, 2 * layers_n * kv_heads * head_dim * dtype_bytes)


class PrefixStore:
    """KV caches (one row each) of token prefixes that many prompts of a run begin with — a system prompt, fixed
    few-shot demonstrations, an instruction — so a prefix runs once per run, not once per batch. Least recently
    used entries go first when the stored tokens pass ``max_tokens``. Keys are token ids: a backend's weights
    never change under it (a new policy is a new backend)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.hits = 0

    def longest(self, ids: Sequence[int], limit: int) -> tuple[int, object] | None:
        """The longest stored prefix of ``ids`` no longer than ``limit`` tokens: (its length, its cache)."""
        best = None
        for key in self.entries:
            if len(key) <= limit and (best is None or len(key) > len(best)) and tuple(ids[: len(key)]) == key:
                best = key
        if best is None:
            return None
        self.entries.move_to_end(best)
        self.hits += 1
        return len(best), self.entries[best]

    def put(self, ids: Sequence[int], cache) -> None:
        key = tuple(ids)
        if len(key) > self.max_tokens:
            return
        self.entries[key] = cache
        self.entries.move_to_end(key)
        while sum(len(k) for k in self.entries) > self.max_tokens:
            self.entries.popitem(last=False)
