"""Continuous batching for the ``hf`` backend: a fixed number of slots decode together, and a row that finishes gives
its slot to the next waiting request at once, so the batch stays full until the queue is empty (a static batch runs
until its longest row is done while finished rows idle).

- Requests with the same prompt (self-consistency's paths, CARP's votes, RAFT's K samples) run the prompt once: its
  KV cache row is copied into each path's slot, and each path samples with its own seeded generator from the same
  first-token distribution.
- Prompts beginning with the same tokens (a system prompt, fixed demonstrations) run that prefix once per run: the
  backend's :class:`~taskfit.models.kv.PrefixStore` keeps its KV.
- A row's text never depends on the batch: positions count the row's own tokens, pads are masked, and a row's draws
  come from its own generator, so a seed gives the same path alone or among 63 others.
- Stop strings are looked for in the last few tokens' text only (enough tokens to hold the longest stop string); a
  hit there is confirmed on the whole text with :func:`cut_at_stop`'s rule, which also makes the final cut.
- Sampling is batched: temperature and top-p for every sampled row at once (top-p among each row's likeliest tokens,
  sorting the vocabulary only when the nucleus is wider), then one uniform number per row from its generator picks
  the token by inverse CDF.
- A finished request marked ``continued`` (reasoning its answer's prompt will continue) leaves its row's KV in the
  backend's :class:`~taskfit.models.kv.ContinuationStore`, so the answer's prompt runs only its new tokens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from taskfit.api import GenerateRequest, GenerateResult
from taskfit.models import kv
from taskfit.models.base import cut_at_stop

REFILL_FRACTION = 8  # refill when at least 1/8 of the slots are free (or nothing runs): fewer, larger prefills


@dataclass
class _Row:
    index: int
    request: GenerateRequest
    ids: list[int]  # the prompt's tokens
    generator: object | None
    position: int  # position id of the next token fed
    window: int  # tokens whose text can hold a stop string that ends in the newest token
    produced: list[int] = field(default_factory=list)
    logprob: float = 0.0


@dataclass
class _Group:
    """Waiting requests with one prompt; ``prefilled`` holds the prompt's (cache, mask, logits) once it has run."""

    ids: list[int]
    indices: deque
    prefilled: tuple | None = None


class Decoder:
    """Decodes a list of encoded prompts with ``slots`` rows at a time on ``backend`` (an HFBackend): its forward
    runner (:class:`~taskfit.models.forward.ForwardRunner`), its end tokens and its detokenizer."""

    def __init__(self, backend, slots: int, on_text: Callable[[str], None] | None = None, bar=None):
        self.text = backend.text
        self.torch = backend.torch
        self.slots = max(1, slots)
        self.on_text = on_text
        self.bar = bar
        self.eos_ids = backend.eos_ids()
        self.runner = backend.runner

    def run(self, encoded: Sequence[list[int]], requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results: list[GenerateResult | None] = [None] * len(requests)
        queue = self._groups(encoded, requests, results)
        rows: list[_Row] = []
        batch: kv.BatchCache | None = None
        logits = None
        torch = self.torch
        room = max((r.max_tokens for r in requests), default=1) + 1
        with torch.inference_mode():
            while queue or rows:
                free = self.slots - len(rows)
                if queue and free and (not rows or free * REFILL_FRACTION >= self.slots):
                    new_rows, parts, new_logits = self._admit(queue, requests, free)
                    if batch is None:
                        batch = kv.BatchCache(self.slots, room)
                    batch.add(parts)
                    logits = torch.cat(([logits] if rows else []) + new_logits)
                    rows += new_rows
                tokens = self._pick(logits, rows)
                chosen = logits.gather(1, torch.tensor(tokens)[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
                gone = []
                for i, (row, token, logprob) in enumerate(zip(rows, tokens, chosen.tolist())):
                    row.produced.append(token)
                    row.logprob += logprob
                    reason = self._finished(row, token)
                    if reason is not None:
                        gone.append(i)
                        results[row.index] = self._result(row, reason)
                        if row.request.continued:  # the cache holds the prompt and every token but the newest
                            self.runner.continuations.put(row.ids + row.produced[:-1], batch.row(i))
                if gone:
                    if len(gone) == len(rows):
                        rows, batch, logits = [], None, None
                        continue
                    order = batch.drop(gone)
                    rows = [rows[i] for i in order]
                    tokens = [tokens[i] for i in order]
                batch.step()
                positions = torch.tensor([[row.position] for row in rows])
                out, _ = self.runner.forward(batch.cache, input_ids=torch.tensor(tokens)[:, None],
                                         attention_mask=batch.mask, position_ids=positions, use_cache=True,
                                         logits_to_keep=1)
                batch.advance()
                self.runner.stats["forward_passes"] += 1
                logits = out.logits[:, -1, :].float()
                for row in rows:
                    row.position += 1
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ admission
    def _groups(self, encoded, requests, results) -> deque:
        """Waiting requests, longest prompt first, those with the same prompt grouped (a request that asks for no
        tokens is answered at once)."""
        by_prompt: dict[tuple[int, ...], _Group] = {}
        for index in sorted(range(len(requests)), key=lambda i: len(encoded[i]), reverse=True):
            if requests[index].max_tokens <= 0:
                results[index] = GenerateResult(text="", n_tokens=0, finish_reason="length", logprob=0.0)
                continue
            key = tuple(encoded[index])
            if key not in by_prompt:
                by_prompt[key] = _Group(list(key), deque())
            by_prompt[key].indices.append(index)
        return deque(by_prompt.values())

    def _admit(self, queue: deque, requests, free: int):
        """Take up to ``free`` waiting requests, run the prompts not run yet in one prefill, and return the new rows,
        their (one-row cache, mask, copies) parts and their first-token logits."""
        taken: list[tuple[_Group, int]] = []
        room = free
        for group in queue:
            if not room:
                break
            count = min(len(group.indices), room)
            taken.append((group, count))
            room -= count
        fresh = [group for group, _ in taken if group.prefilled is None]
        if fresh:
            cache, mask, logits = self.runner.prefill([group.ids for group in fresh])
            for i, group in enumerate(fresh):
                row = self.torch.tensor([i])
                one_cache, one_mask = kv.trim(*kv.select_rows(cache, mask, row))
                group.prefilled = (one_cache, one_mask, logits[i : i + 1])
        rows, parts, first = [], [], []
        torch = self.torch
        for group, count in taken:
            one_cache, one_mask, one_logits = group.prefilled
            parts.append((one_cache, one_mask, count))
            first.append(one_logits.expand(count, -1))
            for _ in range(count):
                index = group.indices.popleft()
                request = requests[index]
                rows.append(_Row(index, request, group.ids,
                                 torch.Generator().manual_seed(request.seed) if request.temperature > 0 else None,
                                 position=self.runner.virtual_tokens + len(group.ids),
                                 window=_stop_window(request.stop)))
            if not group.indices:
                queue.remove(group)
        return rows, parts, first

    # ------------------------------------------------------------------ one step
    def _pick(self, logits, rows: list[_Row]) -> list[int]:
        """Greedy argmax for greedy rows; for sampled rows temperature and top-p over the whole batch at once, then
        one uniform draw from each row's own generator turned into a token by the kept probabilities' running sum
        (inverse CDF).

        Top-p looks at the ``TOP_K`` likeliest tokens first and sorts the whole vocabulary only for rows whose nucleus
        is wider than that; a draw costs one random number instead of one per vocabulary entry."""
        torch = self.torch
        picked = logits.argmax(dim=-1).tolist()
        sampled = [i for i, row in enumerate(rows) if row.generator is not None]
        if not sampled:
            return picked
        index = torch.tensor(sampled)
        temps = torch.tensor([rows[i].request.temperature for i in sampled], dtype=logits.dtype)[:, None]
        probs = torch.softmax(logits.index_select(0, index) / temps, dim=-1)
        top_p = torch.tensor([rows[i].request.top_p for i in sampled], dtype=probs.dtype)[:, None]
        uniform = torch.cat([torch.rand(1, generator=rows[i].generator, dtype=probs.dtype) for i in sampled])
        chosen = nucleus_draw(torch, probs, top_p, uniform)
        for j, i in enumerate(sampled):
            picked[i] = chosen[j]
        return picked

    def _finished(self, row: _Row, token: int) -> str | None:
        stop = row.request.stop
        if token in self.eos_ids:
            return "stop"
        if stop and any(s in self.text(row.produced[-row.window :]) for s in stop if s):
            if cut_at_stop(self.text(row.produced), stop)[1]:
                return "stop"
        if self.on_text is not None:
            self.on_text(self.text(row.produced))
        if len(row.produced) >= row.request.max_tokens:
            return "length"
        return None

    def _result(self, row: _Row, reason: str) -> GenerateResult:
        text, _ = cut_at_stop(self.text(row.produced), row.request.stop)
        self.runner.stats["generated_tokens"] += len(row.produced)
        if self.bar is not None:
            self.bar.update(1)
        return GenerateResult(text=text, n_tokens=len(row.produced), finish_reason=reason, logprob=row.logprob)


TOP_K = 256  # candidates a nucleus is looked for among before the whole vocabulary is sorted


def nucleus_draw(torch, probs, top_p, uniform) -> list[int]:
    """Token ids drawn from each row of ``probs`` restricted to its top-p nucleus (the likeliest tokens whose mass
    before them is under ``top_p``; the top token always), ``uniform`` holding one number in [0, 1) per row.

    A row's result depends on that row alone: its nucleus comes from its top ``TOP_K`` when they hold ``top_p`` of
    the mass, else from its full sort; a row with ``top_p`` ≥ 1 draws over the whole vocabulary in id order."""
    n, vocab = probs.shape
    chosen = torch.zeros(n, dtype=torch.long)
    values, ids = probs.topk(min(TOP_K, vocab), dim=-1)
    whole = top_p[:, 0] >= 1.0
    narrow = ~whole & (values.sum(-1) >= top_p[:, 0])
    wide = ~whole & ~narrow
    if bool(narrow.any()):
        chosen[narrow] = _inverse_cdf(torch, values[narrow], ids[narrow], top_p[narrow], uniform[narrow])
    if bool(wide.any()):  # nuclei wider than the top TOP_K: sort those rows' whole vocabulary
        sorted_values, sorted_ids = probs[wide].sort(dim=-1, descending=True)
        chosen[wide] = _inverse_cdf(torch, sorted_values, sorted_ids, top_p[wide], uniform[wide])
    if bool(whole.any()):
        chosen[whole] = _inverse_cdf(torch, probs[whole], None, None, uniform[whole])
    return chosen.tolist()


def _inverse_cdf(torch, values, ids, top_p, uniform):
    """Per row, the entry whose share of the running sum of ``values`` holds ``uniform`` × the row's total — among
    the top-p nucleus when ``top_p`` is given (``values`` then sorted descending, ``ids`` their token ids)."""
    count = values.shape[1]
    if top_p is not None:
        keep = values.cumsum(-1) - values < top_p
        values = values * keep
        count = keep.sum(-1, keepdim=True)
    mass = values.cumsum(-1)
    at = torch.searchsorted(mass, uniform[:, None] * mass[:, -1:], right=True)
    at = torch.minimum(at, torch.as_tensor(count) - 1)  # u × total rounded up to the total
    return (ids.gather(1, at) if ids is not None else at)[:, 0]


def _stop_window(stop: Sequence[str]) -> int:
    """Tokens whose text surely holds the longest stop string and a character more: a token is at least one byte
    and a character at most four."""
    longest = max((len(s) for s in stop if s), default=0)
    return 4 * (longest + 2)
