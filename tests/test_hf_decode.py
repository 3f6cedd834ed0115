"""Continuous batching, shared prompts and the prefix store of the hf backend (taskfit.models.hf_decode, kv), on
the tiny random model: a row's text never depends on what runs beside it."""

import pytest
import torch

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.models.base import cut_at_stop
from taskfit.models.hf import HFBackend
from taskfit.models.kv import ContinuationStore, PrefixStore


def prompt(text: str, system: str | None = None) -> Prompt:
    messages = ((Message("system", system),) if system else ()) + (Message("user", text),)
    return Prompt(messages, "Answer:")


WORDS = ["the movie was great", "a terrible film", "positive", "negative and terrible", "system user", "Review:"]


def requests_of(count: int, temperature: float, system: str | None = None) -> list[GenerateRequest]:
    """Varied prompts and budgets, so rows finish at different steps and slots are refilled."""
    return [GenerateRequest(prompt(" ".join(WORDS[i % len(WORDS):] + WORDS[: i % 3]), system),
                            max_tokens=3 + (i * 7) % 17, temperature=temperature, top_p=0.9 if i % 2 else 1.0,
                            seed=100 + i)
            for i in range(count)]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, threads=1)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_rows_text_is_the_same_alone_and_in_batches_of_1_8_64_with_refills(backend, temperature):
    requests = requests_of(64, temperature)
    alone = [backend.generate([r])[0] for r in requests[:12]]
    for slots in (1, 8, 64):
        backend.generate_batch_size = slots
        together = backend.generate(requests)
        assert [r.text for r in together[:12]] == [r.text for r in alone]
        assert [r.n_tokens for r in together[:12]] == [r.n_tokens for r in alone]
        assert [r.logprob for r in together[:12]] == pytest.approx([r.logprob for r in alone], abs=1e-4)
    backend.generate_batch_size = None
    if temperature:
        assert len({r.text for r in alone}) > 1


def test_results_come_back_in_request_order(backend):
    """Longest prompts are admitted first and rows finish out of order; results still follow the requests."""
    requests = requests_of(20, 0.0)[::-1]
    backend.generate_batch_size = 4
    together = backend.generate(requests)
    backend.generate_batch_size = None
    assert [r.text for r in together] == [backend.generate([r])[0].text for r in requests]
    assert all(result.n_tokens <= request.max_tokens for request, result in zip(requests, together))


def test_stop_strings_across_token_boundaries_cut_exactly_as_a_whole_text_check(backend):
    """The stop check reads only the last tokens' text; the cut must equal cutting the unstopped text."""
    base = GenerateRequest(prompt("the movie was"), max_tokens=24)
    free = backend.generate([base])[0]
    ids = backend.tokenizer(free.text, add_special_tokens=False).input_ids
    assert len(ids) >= 6
    checked = 0
    for start in range(1, len(free.text) - 3):
        stop = free.text[start : start + 3]
        if not stop.strip():
            continue
        expected, found = cut_at_stop(free.text, (stop,))
        result = backend.generate([GenerateRequest(base.prompt, max_tokens=24, stop=(stop,))])[0]
        assert result.text == expected
        assert result.finish_reason == ("stop" if found else free.finish_reason)
        checked += 1
    assert checked >= 5


def test_paths_of_one_prompt_run_the_prompt_once(backend):
    """Self-consistency's n paths: the prompt's tokens run once, each path samples on its own seed."""
    n = 5
    paths = [GenerateRequest(prompt("a terrible film"), max_tokens=8, temperature=1.0, seed=s) for s in range(n)]
    prompt_tokens = len(backend._encode(backend.render(paths[0].prompt)))
    backend.runner.prefixes = PrefixStore(0)  # nothing stored from earlier tests
    before = backend.stats["input_tokens"]
    together = backend.generate(paths)
    assert backend.stats["input_tokens"] - before == prompt_tokens
    assert [r.text for r in together] == [backend.generate([p])[0].text for p in paths]
    assert len({r.text for r in together}) > 1


def test_a_shared_system_prompt_runs_once_per_run(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, threads=1, batch_size=4)
    system = " ".join(["Answer with one word: positive or negative."] * 3)
    requests = requests_of(12, 0.0, system)
    backend.generate_batch_size = 4
    first = backend.generate(requests)
    assert backend.runner.prefixes.entries  # the shared prefix was stored
    before = backend.stats["input_tokens"]
    again = backend.generate(requests)
    used = backend.stats["input_tokens"] - before
    distinct = {backend.render(r.prompt) for r in requests}  # requests with one prompt run it once
    assert len(distinct) < len(requests)
    full = sum(len(backend._encode(text)) for text in distinct)
    prefix = max(len(key) for key in backend.runner.prefixes.entries)
    assert used == full - prefix * len(distinct)
    assert [r.text for r in again] == [r.text for r in first]
    plain = HFBackend(tiny_model_dir, threads=1, batch_size=4)
    plain.runner.shared_prefix_min_tokens = 10**9
    plain.runner.prefixes = PrefixStore(0)
    assert [r.text for r in plain.generate(requests)] == [r.text for r in first]
    # log-likelihood uses the same store: later batches of contexts skip the stored prefix
    scored = [LoglikelihoodRequest(r.prompt, " positive") for r in requests]
    with_store = backend.loglikelihood(scored)
    assert [r.logprob for r in with_store] == pytest.approx([r.logprob for r in plain.loglikelihood(scored)],
                                                            abs=1e-4)


def test_a_lone_prompt_learns_the_prefix_it_shares_with_the_previous_one(tiny_model_dir):
    """An assistant asks one question at a time: the system prompt is found against the previous request."""
    backend = HFBackend(tiny_model_dir, threads=1)
    system = " ".join(["Answer with one word: positive or negative."] * 3)
    first, second, third = (GenerateRequest(prompt(t, system), max_tokens=4) for t in WORDS[:3])
    backend.generate([first])
    assert not backend.runner.prefixes.entries
    backend.generate([second])
    assert backend.runner.prefixes.entries
    before = backend.stats["input_tokens"]
    backend.generate([third])
    own = len(backend._encode(backend.render(third.prompt))) - max(len(k) for k in backend.runner.prefixes.entries)
    assert backend.stats["input_tokens"] - before == own


def test_the_prefix_store_keeps_the_longest_match_and_forgets_the_least_used():
    store = PrefixStore(max_tokens=10)
    store.put([1, 2, 3], "a")
    store.put([1, 2, 3, 4, 5], "b")
    assert store.longest([1, 2, 3, 4, 5, 6], limit=5) == (5, "b")
    assert store.longest([1, 2, 3, 4, 5, 6], limit=4) == (3, "a")
    assert store.longest([1, 2, 9], limit=5) is None
    store.put([7, 8, 9], "c")  # 11 tokens stored: the least recently used ([1..5], looked up before [1,2,3]) goes
    assert list(store.entries) == [(1, 2, 3), (7, 8, 9)]


def test_an_answer_continuing_its_reasoning_runs_only_the_tokens_after_it(tiny_model_dir):
    """Chain of thought: the reasoning (``continued``) leaves its row's KV; the answer's prompt re-renders the
    reasoning (stripped, with a trigger after it) and runs only the tokens after what it shares with the stored row —
    for generation and log-likelihood alike, with the same text and log-probabilities as running it whole."""
    stored = HFBackend(tiny_model_dir, threads=1)
    plain = HFBackend(tiny_model_dir, threads=1)
    plain.runner.continuations = ContinuationStore(0)  # keeps nothing
    reasoning = [GenerateRequest(prompt(" ".join(WORDS[i:] + WORDS[:i])), max_tokens=6 + 3 * i, continued=True)
                 for i in range(6)]
    stored.generate_batch_size = 4  # rows finish at different steps, slots refill
    thoughts = stored.generate(reasoning)
    assert [t.text for t in thoughts] == [t.text for t in plain.generate(reasoning)]
    assert len(stored.runner.continuations.entries) == len(reasoning)
    answers = [GenerateRequest(Prompt(r.prompt.messages, f"Answer: {t.text.strip()}\nSo:"), max_tokens=5)
               for r, t in zip(reasoning, thoughts)]
    whole = [len(stored._encode(stored.render(a.prompt))) for a in answers]
    own = [len(stored._encode(stored.render(r.prompt))) for r in reasoning]
    for backend in (stored, plain):
        backend.stats["input_tokens"] = 0
    with_kv, without = stored.generate(answers), plain.generate(answers)
    assert [a.text for a in with_kv] == [a.text for a in without]
    assert [a.logprob for a in with_kv] == pytest.approx([a.logprob for a in without], abs=1e-4)
    assert plain.stats["input_tokens"] == sum(whole)
    assert stored.stats["input_tokens"] <= sum(w - o for w, o in zip(whole, own))  # not even the question again
    scored = [LoglikelihoodRequest(a.prompt, " positive") for a in answers]
    assert [r.logprob for r in stored.loglikelihood(scored)] == pytest.approx(
        [r.logprob for r in plain.loglikelihood(scored)], abs=1e-4)


def test_the_continuation_store_finds_the_longest_shared_beginning_and_forgets_the_least_used():
    store = ContinuationStore(max_tokens=12)
    store.put([1, 2, 3, 4], "a")
    store.put([1, 2, 5, 6], "b")
    store.put([7, 8], "c")
    assert store.longest([1, 2, 3, 9, 9], limit=10) == (3, "a")  # shares 1 2 3, though not the whole key
    assert store.longest([1, 2, 5, 6, 7], limit=10) == (4, "b")
    assert store.longest([1, 2, 5, 6, 7], limit=3) == (3, "b")
    assert store.longest([9], limit=10) is None
    store.put([4, 4, 4, 4], "d")  # 14 tokens: the least recently used ([7, 8]) goes, then 12 fit
    assert set(store.entries) == {(1, 2, 3, 4), (1, 2, 5, 6), (4, 4, 4, 4)}
    assert store.sorted == sorted(store.entries) and store.tokens == 12
    assert store.longest([7, 8, 1], limit=10) is None


def test_default_slots_follow_memory(backend, monkeypatch):
    import taskfit.models.hf as hf

    assert backend.generate_slots(100) == hf.GENERATE_SLOTS
    monkeypatch.setattr(hf, "free_memory", lambda device: backend.runner.kv_bytes_per_token * 100 * 4 * 3)
    assert backend.generate_slots(100) == 3  # a quarter of the free memory holds 3 rows of 100 tokens
    backend.generate_batch_size = 5
    assert backend.generate_slots(100) == 5
    backend.generate_batch_size = None
    assert torch.is_tensor(torch.zeros(1))


def _one_row(width: int, seed: int, layers: int = 2):
    """A one-row cache of ``width`` columns with recognisable values, and its all-real mask."""
    from taskfit.models.kv import cache_of

    g = torch.Generator().manual_seed(seed)
    return (cache_of([(torch.randn(1, 2, width, 3, generator=g), torch.randn(1, 2, width, 3, generator=g))
                         for _ in range(layers)]), torch.ones(1, width, dtype=torch.long))


def test_the_batch_cache_keeps_rows_right_aligned_through_joins_drops_and_growth():
    """Rows written in place must read back as the dense right-aligned batch kv.join would build: a wider row joining
    later widens the view to the left (masked zeros for the others), a dropped row is replaced by the last one, and
    steps past the buffer's room move the view to a fresh buffer."""
    from taskfit.models.kv import BatchCache, layers

    batch = BatchCache(slots=6, room=2)
    a, b, c = _one_row(3, 1), _one_row(5, 2), _one_row(7, 3)
    batch.add([(a[0], a[1], 2), (b[0], b[1], 1)])  # rows: a, a, b
    batch.add([(c[0], c[1], 1)])  # wider than the view: every other row gains masked columns on the left
    assert batch.mask.tolist() == [[0] * 4 + [1] * 3, [0] * 4 + [1] * 3, [0, 0] + [1] * 5, [1] * 7]
    keys = layers(batch.cache)[1][0]
    assert torch.equal(keys[0, :, 4:], layers(a[0])[1][0][0]) and torch.equal(keys[3], layers(c[0])[1][0][0])
    assert not keys[0, :, :4].any()  # masked columns are zeros, never stale memory
    written = []
    for step in range(5):  # more steps than the room: the view moves to a fresh buffer on the way
        batch.step()
        column = torch.full((batch.rows, 2, 1, 3), float(step + 1))
        for layer in batch.cache.layers:
            layer.update(column, -column)
        batch.advance()
        written.append(step + 1)
    assert batch.mask.shape == (4, 12) and batch.mask[:, -5:].all()
    assert layers(batch.cache)[0][0][:, 0, -5:, 0].tolist() == [[float(s) for s in written]] * 4
    order = batch.drop([1])  # the last row (c) takes row 1's place
    assert order == [0, 3, 2]
    assert torch.equal(layers(batch.cache)[1][0][1, :, -12:-5], layers(c[0])[1][0][0])
    order = batch.drop([1])  # c gone: no row uses the first columns any more, they are cut from the left
    assert order == [0, 2] and batch.mask.shape == (2, 10)
    row = batch.row(1)  # b's real columns, copied
    assert layers(row)[0][0].shape == (1, 2, 10, 3)
    assert torch.equal(layers(row)[0][0][0, :, :5], layers(b[0])[0][0][0])


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference rule, written plainly: sort, keep tokens whose mass before them is under top_p, renormalise."""
    values, ids = probs.sort(descending=True)
    keep = values.cumsum(0) - values < top_p
    out = torch.zeros_like(probs)
    out[ids[keep]] = values[keep]
    return out / out.sum()


@pytest.mark.parametrize("temperature", [0.3, 2.0])  # a nucleus inside the top 256 tokens, and a wider one
def test_a_nucleus_draw_follows_the_truncated_distribution_and_depends_on_its_row_alone(temperature):
    from taskfit.models.hf_decode import TOP_K, nucleus_draw

    torch.manual_seed(0)
    logits = torch.randn(3, 2000) * 3
    probs = torch.softmax(logits / temperature, dim=-1)
    top_p = torch.tensor([[0.9], [1.0], [0.5]])
    draws = 20000
    uniform = torch.rand(draws)
    for row in range(3):
        target = nucleus(probs[row], float(top_p[row]))
        got = nucleus_draw(torch, probs[row].expand(draws, -1), top_p[row].expand(draws, 1), uniform)
        counts = torch.bincount(torch.tensor(got), minlength=2000).float() / draws
        ranked = probs[row].argsort(descending=True)  # Kolmogorov-Smirnov distance, likeliest tokens first
        assert float((counts[ranked].cumsum(0) - target[ranked].cumsum(0)).abs().max()) < 2.0 / draws**0.5
        assert float(counts[target == 0].sum()) == 0.0  # nothing outside the nucleus
    if temperature == 2.0:
        assert int((nucleus(probs[0], 0.9) > 0).sum()) > TOP_K  # the wide path was taken
    mixed = nucleus_draw(torch, probs, top_p, uniform[:3])
    alone = [nucleus_draw(torch, probs[i : i + 1], top_p[i : i + 1], uniform[i : i + 1])[0] for i in range(3)]
    assert mixed == alone
    edges = nucleus_draw(torch, probs[:1].expand(2, -1), top_p[:1].expand(2, 1), torch.tensor([0.0, 1 - 2**-24]))
    ranked = probs[0].argsort(descending=True)
    assert edges[0] == int(ranked[0])
    assert edges[1] == int(ranked[int((nucleus(probs[0], 0.9) > 0).sum()) - 1])


def test_length_buckets_split_only_where_padding_costs_more_than_a_pass():
    from taskfit.models.kv import length_buckets

    assert length_buckets([5, 6, 7], 64) == [[2, 1, 0]]  # close lengths: one pass
    groups = length_buckets([7] * 50 + [100] * 4, 64)  # four long rows would pad fifty short ones to 100
    assert sorted(map(sorted, groups)) == [list(range(50)), [50, 51, 52, 53]]
    assert length_buckets([7] * 50 + [100] * 4, 10**6) == [[50, 51, 52, 53] + list(range(50))]
    assert length_buckets([], 64) == []


def test_prefilling_rows_of_very_different_lengths_in_several_passes_changes_no_logits(backend):
    """A batch whose own tokens range from a few to hundreds runs in passes of similar lengths; each row's logits and
    cache are those of the row run alone, rows in the order given."""
    contexts = [backend._encode(backend.render(prompt(" ".join(WORDS[i % 4 :] * (1 + 12 * (i % 3 == 0))))))
                for i in range(7)]
    assert max(map(len, contexts)) > 4 * min(map(len, contexts))
    before = backend.stats["forward_passes"]
    cache, mask, logits = backend.runner.prefill(contexts)
    assert backend.stats["forward_passes"] - before > 1
    assert mask.shape == (7, max(map(len, contexts)))
    for i, ctx in enumerate(contexts):
        _, alone_mask, alone = backend.runner.prefill([ctx])
        assert torch.allclose(logits[i], alone[0], atol=1e-4)
        assert int(mask[i].sum()) == len(ctx)
