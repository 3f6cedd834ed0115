"""KV-cache rows as data: pick, pad, join and trim the rows of a transformers ``DynamicCache``, and a run-wide store
of prefix caches.

A batch cache here is always *right-aligned*: every row's real tokens end at the last column, and an attention mask
(rows x columns, 1 = real) says which columns of a row hold real tokens. Rows may have masked columns inside (pads
between a shared prefix and a row's own suffix); only the mask tells. Rows that joined a batch later are padded on
the left, and columns no row uses any more are cut from the left, so the cache is as wide as its longest row.
"""

from __future__ import annotations

import bisect
import inspect
from collections import OrderedDict
from collections.abc import Sequence


def layers(cache) -> list[tuple]:
    """(keys, values) per layer, each rows x heads x columns x head size."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def select_rows(cache, mask, rows):
    """The cache and mask of the given rows (a LongTensor of row indices; repeats copy a row)."""
    picked = map_cache(cache, lambda t: t.index_select(0, rows.to(t.device)))
    return picked, mask.index_select(0, rows)


def join(parts: Sequence[tuple]):
    """One right-aligned batch from (cache, mask) parts: each part left-padded (masked zeros) to the widest, rows
    stacked in order. Parts without a cache (``None``) join their masks only."""
    import torch

    width = max(mask.shape[1] for _, mask in parts)
    masks, per_part = [], []
    for cache, mask in parts:
        grow = width - mask.shape[1]
        masks.append(torch.nn.functional.pad(mask, (grow, 0)))
        if cache is not None:
            per_part.append([(_pad_columns(k, grow), _pad_columns(v, grow)) for k, v in layers(cache)])
    if not per_part:
        return None, torch.cat(masks)
    joined = [(torch.cat([part[i][0] for part in per_part]), torch.cat([part[i][1] for part in per_part]))
              for i in range(len(per_part[0]))]
    return cache_of(joined), torch.cat(masks)


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


class ContinuationStore:
    """KV caches (one row each) of finished generations that a later prompt continues — a chain of thought before
    its answer, a plan before its solution — so the later prompt runs only the tokens after the longest stored
    sequence it shares a beginning with (the re-rendered text need not match to its end: a trimmed space or an
    added trigger only costs the tokens after the first difference).

    Keys are kept sorted, so the stored sequence sharing the longest beginning with a query is next to the query's
    place in that order (two bisections, not a scan); least recently used entries go first when the stored tokens
    pass ``max_tokens``."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.sorted: list[tuple[int, ...]] = []
        self.tokens = 0
        self.hits = 0

    def put(self, ids: Sequence[int], cache) -> None:
        key = tuple(ids)
        if not key or len(key) > self.max_tokens:
            return
        if key not in self.entries:
            bisect.insort(self.sorted, key)
            self.tokens += len(key)
        self.entries[key] = cache
        self.entries.move_to_end(key)
        while self.tokens > self.max_tokens:
            old, _ = self.entries.popitem(last=False)
            del self.sorted[bisect.bisect_left(self.sorted, old)]
            self.tokens -= len(old)

    def longest(self, ids: Sequence[int], limit: int) -> tuple[int, object] | None:
        """(tokens shared, the stored cache) for the stored sequence sharing the longest beginning with ``ids``,
        counted up to ``limit`` tokens; the cache may hold more columns than that (the caller cuts it)."""
        query = tuple(ids)
        place = bisect.bisect_left(self.sorted, query)
        best, best_key = 0, None
        for key in self.sorted[max(0, place - 1) : place + 1]:
            shared = min(common_prefix_length((key, query)), limit)
            if shared > best:
                best, best_key = shared, key
        if best_key is None:
            return None
        self.entries.move_to_end(best_key)
        self.hits += 1
        return best, self.entries[best_key]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` share."""
    first = sequences[0]
    n = min(len(seq) for seq in sequences)
    for i in range(n):
        token = first[i]
        if any(seq[i] != token for seq in sequences):
            return i
    return n


def length_buckets(lengths: Sequence[int], pass_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` (rows' own token counts) split into groups that run as one left-padded pass each, the
    split that minimises the padded positions run plus ``pass_tokens`` per pass (dynamic programming over the rows
    sorted longest first; a group is a run of that order). Groups come longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j rows of the order
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # the last group is order[i:j], as wide as its first (longest) row
            cost = best[i] + (j - i) * lengths[order[i]] + pass_tokens
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def first_columns(cache, columns: int):
    """The cache's first ``columns`` columns (a view)."""
    return map_cache(cache, lambda t: t[:, :, :columns, :])


def compact_row(cache, mask, row: int):
    """Row ``row`` of a batch cache as a one-row cache holding only its real (unmasked) columns, copied, so it does
    not keep the batch's tensors alive."""
    columns = mask[row].nonzero().squeeze(-1)
    return map_cache(cache, lambda t: t[row : row + 1].index_select(2, columns.to(t.device)))


class BatchCache:
    """The decoding batch's KV cache, kept in place: per layer one key and one value buffer of (slots, heads, columns,
    head size) with room to the right, of which the batch is a view (its rows, columns ``begin:end``). A decode step
    writes its column into the room instead of copying the whole cache (transformers' ``DynamicCache`` concatenates,
    every step); a finished row is replaced by the batch's last row (one row copied, not the batch); a joining row is
    written into the next free row, right-aligned, masked zeros on its left. Rows are right-aligned as everywhere in
    this module; ``mask`` (rows x view columns) says which columns are real."""

    def __init__(self, slots: int, room: int):
        self.slots, self.room = slots, max(1, room)
        self.layers: list = []
        self.rows = self.begin = self.end = 0
        self.mask = None
        self.cache = None  # what the model's forward takes: a DynamicCache whose layers view the buffers

    # -- rows in and out
    def add(self, parts: Sequence[tuple]) -> None:
        """Append the rows of ``parts`` — (one-row cache, its mask, how many copies) — in order."""
        import torch

        width = max(mask.shape[1] for _, mask, _ in parts)
        count = sum(copies for _, _, copies in parts)
        if not self.layers:
            self._allocate(layers(parts[0][0]), width)
        elif width > self.end - self.begin:
            self._widen(width)
        if self.rows + count > self.slots:
            raise ValueError(f"{self.rows + count} rows do not fit {self.slots} slots")
        view = self.end - self.begin
        masks = [] if self.mask is None else [self.mask]
        row = self.rows
        for cache, mask, copies in parts:
            own = mask.shape[1]
            for (kbuf, vbuf), (k, v) in zip(self.layers, layers(cache)):
                for buf, src in ((kbuf, k), (vbuf, v)):
                    buf[row : row + copies, :, self.begin : self.end - own].zero_()
                    buf[row : row + copies, :, self.end - own : self.end] = src.to(buf.device)
            masks.append(torch.nn.functional.pad(mask, (view - own, 0)).expand(copies, -1))
            row += copies
        self.rows = row
        self.mask = torch.cat(masks)
        self._view()

    def drop(self, gone: Sequence[int]) -> list[int]:
        """Remove rows ``gone``: the last kept rows move into their places. Returns, for each row after, the row it
        was before (reorder per-row state with it)."""
        gone_set = set(gone)
        kept = self.rows - len(gone_set)
        holes = [i for i in sorted(gone_set) if i < kept]
        movers = [i for i in range(kept, self.rows) if i not in gone_set]
        order = list(range(kept))
        for hole, mover in zip(holes, movers):
            for kbuf, vbuf in self.layers:
                kbuf[hole, :, self.begin : self.end] = kbuf[mover, :, self.begin : self.end]
                vbuf[hole, :, self.begin : self.end] = vbuf[mover, :, self.begin : self.end]
            order[hole] = mover
        self.rows = kept
        self.mask = self.mask[order]
        used = self.mask.any(dim=0).nonzero()  # columns no row attends to any more are cut from the left
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first:
            self.begin += first
            self.mask = self.mask[:, first:]
        self._view()
        return order

    def row(self, index: int):
        """One row's real columns as a one-row cache of its own (a copy)."""
        return compact_row(self.cache, self.mask, index)

    # -- one decode step
    def step(self) -> None:
        """Before a forward pass: room for one more column (the model writes it) and the mask extended."""
        import torch

        if self.end + 1 > self.layers[0][0].shape[2]:
            self._move(self.end - self.begin, self.room)
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.rows, 1))], dim=1)

    def advance(self) -> None:
        """After a forward pass: the column every layer wrote is part of the batch."""
        self.end += 1
        self._view()

    # -- buffers
    def _allocate(self, first: list[tuple], width: int) -> None:
        self.layers = [(k.new_empty((self.slots, k.shape[1], width + self.room, k.shape[3])),
                        v.new_empty((self.slots, v.shape[1], width + self.room, v.shape[3]))) for k, v in first]
        self.begin, self.end = 0, width

    def _widen(self, width: int) -> None:
        """Give the view ``width`` columns by growing it to the left (the existing rows get masked zeros there)."""
        import torch

        grow = width - (self.end - self.begin)
        if self.begin < grow:
            self._move(width, self.room, keep_left=grow)
        self.begin -= grow
        for kbuf, vbuf in self.layers:
            kbuf[: self.rows, :, self.begin : self.begin + grow].zero_()
            vbuf[: self.rows, :, self.begin : self.begin + grow].zero_()
        if self.mask is not None:
            self.mask = torch.nn.functional.pad(self.mask, (grow, 0))

    def _move(self, width: int, room: int, keep_left: int = 0) -> None:
        """Copy the view into fresh buffers with ``keep_left`` free columns before it and ``room`` after."""
        view = self.end - self.begin
        columns = keep_left + max(width, view) + room
        moved = []
        for kbuf, vbuf in self.layers:
            pair = []
            for buf in (kbuf, vbuf):
                fresh = buf.new_empty((self.slots, buf.shape[1], columns, buf.shape[3]))
                fresh[: self.rows, :, keep_left : keep_left + view] = buf[: self.rows, :, self.begin : self.end]
                pair.append(fresh)
            moved.append(tuple(pair))
        self.layers = moved
        self.begin, self.end = keep_left, keep_left + view
        if self.cache is not None:
            self._view()

    def _view(self) -> None:
        if self.cache is None:
            self.cache = _growing_cache(self)
        for layer in self.cache.layers:
            layer.view()


_GROWING_LAYER = None


def _growing_cache(batch: BatchCache):
    """A ``DynamicCache`` whose layers view ``batch``'s buffers; a forward pass writes its column into them in
    place, past the view (``BatchCache.advance`` then takes it in)."""
    global _GROWING_LAYER
    from transformers import DynamicCache

    if _GROWING_LAYER is None:
        from transformers.cache_utils import DynamicLayer

        class GrowingLayer(DynamicLayer):
            def __init__(self, owner: BatchCache, index: int):
                super().__init__()
                self.owner, self.index = owner, index
                self.is_initialized = True

            def view(self):
                kbuf, vbuf = self.owner.layers[self.index]
                self.device = kbuf.device
                self.keys = kbuf[: self.owner.rows, :, self.owner.begin : self.owner.end]
                self.values = vbuf[: self.owner.rows, :, self.owner.begin : self.owner.end]

            def update(self, key_states, value_states, *args, **kwargs):
                owner, new = self.owner, key_states.shape[-2]
                kbuf, vbuf = owner.layers[self.index]
                if owner.end + new > kbuf.shape[2]:
                    raise RuntimeError("BatchCache.step() makes room before each forward pass")
                kbuf[: owner.rows, :, owner.end : owner.end + new] = key_states
                vbuf[: owner.rows, :, owner.end : owner.end + new] = value_states
                return (kbuf[: owner.rows, :, owner.begin : owner.end + new],
                        vbuf[: owner.rows, :, owner.begin : owner.end + new])

        _GROWING_LAYER = GrowingLayer
    cache = DynamicCache()
    cache.layers = [_GROWING_LAYER(batch, i) for i in range(len(batch.layers))]
    return cache


def length_passes(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """The rows of a batch (their indices) in passes of similar length: longest first, each pass as many rows as fit
    in ``budget`` padded tokens (rows x the pass's longest row); a row longer than the budget runs alone. Budget 0:
    the whole batch in one pass.

    A pass pads only to its own longest row, and what one forward / backward pass holds in memory grows with its
    padded tokens; on the CPU, rows of a few hundred tokens run as fast alone as batched."""
    if budget <= 0:
        return [list(range(len(lengths)))]
    passes: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            passes.append(current)
            current = []
        current.append(i)
    return passes + [current] if current else passes


def packs(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """The rows of a batch (their indices) packed into sequences of at most ``budget`` tokens: first fit, longest
    rows first; a row longer than the budget is a pack alone. Budget 0: every row in one pack.

    A pack runs as one row with positions restarting at each of its rows (transformers then masks attention
    between them): no padding at all, and each pass a sequence long enough for the CPU's matrix kernels."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if budget <= 0:
        return [order]
    out: list[list[int]] = []
    room: list[int] = []
    for i in order:
        slot = next((k for k, free in enumerate(room) if lengths[i] <= free), None)
        if slot is None:
            out.append([i])
            room.append(budget - lengths[i])
        else:
            out[slot].append(i)
            room[slot] -= lengths[i]
    return out


def after_prefixes(model, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                   pad: int = 0, **prefix_options):
    """Each prefix run once and continued by each of its continuations: ``(prefix output, continuation output,
    continuation tokens)``, the continuations in order (prefix by prefix).

    The prefixes run left-padded (positions counted from each row's first real token) with ``use_cache``; their KV
    cache is repeated for their continuations, which continue it right-padded (``pad``), so every continuation sees
    exactly its own prefix. ``model`` is a causal LM or its decoder body; gradients flow through both passes when
    called outside inference mode. The continuation output is None when every continuation is empty."""
    import torch

    device = next(model.parameters()).device
    keyword = cache_keyword(model)
    width = max(len(p) for p in prefixes)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prefixes], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prefixes], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **prefix_options)
    owner = torch.tensor([i for i, cs in enumerate(continuations) for _ in cs], device=device)
    flat = [list(c) for cs in continuations for c in cs]
    longest = max(len(c) for c in flat)
    tokens = torch.tensor([c + [pad] * (longest - len(c)) for c in flat], device=device)
    if longest == 0:
        return first, None, tokens
    own_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for c in flat], device=device)
    rest = model(input_ids=tokens, attention_mask=torch.cat([mask[owner], own_mask], -1),
                 position_ids=positions[owner, -1:] + 1 + torch.arange(longest, device=device),
                 **{keyword: map_cache(getattr(first, keyword), lambda t: t[owner])})
    return first, rest, tokens


def map_cache(cache, fn):
    """A new KV cache whose every layer's keys and values are ``fn`` of the given cache's (row selection,
    expansion). The tensors ``fn`` returns are taken as they are — a view stays a view — so only ``fn`` copies; a
    forward pass on the new cache concatenates into new tensors and never writes into the given one's."""
    return cache_of([(fn(layer.keys), fn(layer.values)) for layer in cache.layers])


def cache_of(tensors):
    """A ``DynamicCache`` holding the given (keys, values) per layer without copying them (``DynamicCache.update``
    would concatenate each onto an empty tensor: a copy per layer)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    layers = []
    for keys, values in tensors:
        layer = DynamicLayer()
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
        layers.append(layer)
    cache.layers = layers
    return cache


def cache_keyword(model) -> str:
    """The name under which ``model.forward`` takes and returns its KV cache: ``cache`` in transformers 5.x (the old
    ``past_key_values`` still works there but warns on every call), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def virtual_cache(model, learned):
    """The KV cache of an adapter's virtual tokens (:func:`taskfit.adapters.apply.apply_adapter`'s ``(peft type,
    prompt)``): a prefix's cache as it is, prompt-tuning embeddings run once through ``model``; copied, so the
    adapter's tensors are not shared."""
    import torch

    kind, prompt = learned
    with torch.inference_mode():
        if kind == "PROMPT_TUNING":
            out = model(inputs_embeds=prompt.to(model.dtype), use_cache=True, logits_to_keep=1)
            prompt = getattr(out, cache_keyword(model))
        return map_cache(prompt, lambda t: t.detach().clone())
