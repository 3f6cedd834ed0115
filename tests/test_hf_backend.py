"""Mechanics of the hf backend on a tiny random model built in the test (fast, no real weights)."""

import pytest
import torch

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.models.base import cut_at_stop
from taskfit.models.hf import HFBackend
from taskfit.models.kv import PrefixStore


def prompt(text: str, prefix: str = "") -> Prompt:
    return Prompt((Message("user", text),), prefix)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, batch_size=4, threads=1)


def test_render_uses_chat_template_and_switch(tiny_model_dir, backend):
    p = Prompt((Message("system", "sys"), Message("user", "hi")), "Answer:")
    assert backend.render(p) == ("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                                 "<|im_start|>assistant\nAnswer:")
    plain = HFBackend(tiny_model_dir, chat_template=False, threads=1)
    assert plain.render(p) == "sys\n\nhi\nAnswer:"


def test_loglikelihood_matches_a_manual_forward_pass(backend):
    request = LoglikelihoodRequest(prompt("the movie was", "Review:"), " great and positive")
    (result,) = backend.loglikelihood([request])
    ctx = backend.tokenizer(backend.render(request.context), add_special_tokens=False).input_ids
    full = backend.tokenizer(backend.render(request.context) + request.continuation, add_special_tokens=False).input_ids
    cont = full[len(ctx):]
    with torch.no_grad():
        logits = backend.model(torch.tensor([full])).logits[0]
    logprobs = torch.log_softmax(logits, -1)
    expected = sum(float(logprobs[len(ctx) - 1 + i, tok]) for i, tok in enumerate(cont))
    assert result.n_tokens == len(cont) > 1
    assert result.logprob == pytest.approx(expected, abs=1e-4)


def test_batched_left_padded_scores_equal_one_by_one(backend):
    requests = [
        LoglikelihoodRequest(prompt("a terrible negative film", "The sentiment is"), " negative"),
        LoglikelihoodRequest(prompt("a terrible negative film", "The sentiment is"), " positive"),
        LoglikelihoodRequest(prompt("great", "The sentiment is"), " positive"),
        LoglikelihoodRequest(prompt("the movie was great and positive indeed", ""), "positive or negative"),
        LoglikelihoodRequest(prompt("system user", "Answer:"), " the"),
    ]
    together = backend.loglikelihood(requests)
    alone = [backend.loglikelihood([r])[0] for r in requests]
    for a, b in zip(together, alone):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.n_tokens == b.n_tokens and a.is_greedy == b.is_greedy


def test_shared_context_requests_share_a_forward_pass(backend):
    context = prompt("a terrible negative film", "Answer:")
    candidates = (" the", " movie", " positive", " negative", " film", " and", " a", " great")
    single = [w for w in candidates if len(backend.tokenizer(w, add_special_tokens=False).input_ids) == 1][:2]
    assert len(single) == 2
    before = backend.stats["forward_passes"]
    backend.loglikelihood([LoglikelihoodRequest(context, w) for w in single])
    assert backend.stats["forward_passes"] - before == 1


def manual_logprob(backend, request):
    ctx = backend.tokenizer(backend.render(request.context), add_special_tokens=False).input_ids
    full = backend.tokenizer(backend.render(request.context) + request.continuation,
                             add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(backend.model(torch.tensor([full])).logits[0], -1)
    return sum(float(logprobs[i - 1, full[i]]) for i in range(len(ctx), len(full)))


def test_multi_token_candidates_run_their_context_once(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, batch_size=2, threads=1)  # several context batches
    contexts = [prompt("a terrible negative film " * k, "Answer:") for k in (1, 3, 2)]
    words = (" great and positive", " negative", " the movie was terrible", " a film")
    requests = [LoglikelihoodRequest(c, w) for c in contexts for w in words]
    before = dict(backend.stats)
    results = backend.loglikelihood(requests)
    for request, result in zip(requests, results):
        assert result.logprob == pytest.approx(manual_logprob(backend, request), abs=1e-4)
    ctx_tokens = sum(len(backend.tokenizer(backend.render(c), add_special_tokens=False).input_ids) for c in contexts)
    used = backend.stats["input_tokens"] - before["input_tokens"]
    assert used < ctx_tokens + 4 * 3 * 6  # each context once, plus the continuations' tokens
    assert used < 0.5 * ctx_tokens * len(words)  # far below running every context once per candidate


def test_contexts_with_a_shared_prefix_run_it_once(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, batch_size=4, threads=1)
    demos = " ".join(["the movie was great and positive", "a terrible negative film"] * 6)
    contexts = [Prompt((Message("system", demos), Message("user", text)), "The sentiment is")
                for text in ("great", "a terrible film indeed", "the movie was", "bad", "system user assistant")]
    requests = [LoglikelihoodRequest(c, w) for c in contexts for w in (" positive", " negative and terrible")]
    before = backend.stats["input_tokens"]
    shared = backend.loglikelihood(requests)
    used_shared = backend.stats["input_tokens"] - before
    backend.runner.shared_prefix_min_tokens = 10**9  # the plain path, for comparison: nothing shared, nothing stored
    backend.runner.prefixes = PrefixStore(0)
    before = backend.stats["input_tokens"]
    plain = backend.loglikelihood(requests)
    used_plain = backend.stats["input_tokens"] - before
    for request, a, b in zip(requests, shared, plain):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert a.logprob == pytest.approx(manual_logprob(backend, request), abs=1e-4)
        assert a.is_greedy == b.is_greedy and a.n_tokens == b.n_tokens
    assert used_shared < 0.6 * used_plain  # the demos ran once per batch, not once per context


def test_greedy_generation_is_batch_invariant_and_deterministic(backend):
    requests = [GenerateRequest(prompt(t), max_tokens=6) for t in ("hi", "the movie was great", "a terrible film")]
    together = backend.generate(requests)
    alone = [backend.generate([r])[0] for r in requests]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.text for r in backend.generate(requests)] == [r.text for r in together]
    assert all(r.n_tokens <= 6 for r in together)


def test_sampling_is_reproducible_per_seed(backend):
    req = GenerateRequest(prompt("the movie"), max_tokens=8, temperature=1.0, seed=11)
    other = GenerateRequest(prompt("the movie"), max_tokens=8, temperature=1.0, seed=12)
    first = backend.generate([req])[0].text
    assert backend.generate([other, req])[1].text == first
    texts = {backend.generate([GenerateRequest(prompt("the movie"), max_tokens=8, temperature=1.0, seed=s)])[0].text
             for s in range(6)}
    assert len(texts) > 1  # different seeds really sample differently


def test_stop_strings_cut_generation(backend):
    free = backend.generate([GenerateRequest(prompt("the movie was"), max_tokens=12)])[0]
    if len(free.text) < 2:
        pytest.skip("random model produced too little text to cut")
    stop = free.text[1:3]
    cut = backend.generate([GenerateRequest(prompt("the movie was"), max_tokens=12, stop=(stop,))])[0]
    assert stop not in cut.text
    assert free.text.startswith(cut.text)
    assert cut.finish_reason == "stop"


def test_cut_at_stop_picks_earliest():
    assert cut_at_stop("abc\ndef.", ["."," \n", "\n"]) == ("abc", True)
    assert cut_at_stop("abc", ["\n"]) == ("abc", False)
    # a reply that opens with whitespace is not cut to nothing
    assert cut_at_stop("\n\n武汉大学出版社\n问题", ["\n"]) == ("\n\n武汉大学出版社", True)
    assert cut_at_stop("  \n", ["\n"]) == ("  \n", False)


def test_greedy_decoding_matches_transformers_generate(backend):
    req = GenerateRequest(prompt("the movie was great"), max_tokens=10)
    ours = backend.generate([req])[0]
    ids = backend.tokenizer(backend.render(req.prompt), add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = backend.model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=backend.runner.pad_id)
    new = ref[0, ids.shape[1]:].tolist()
    eos = backend.tokenizer.eos_token_id
    if eos in new:
        new = new[: new.index(eos) + 1]
    assert ours.n_tokens == len(new)
    assert ours.text == backend.tokenizer.decode(new, skip_special_tokens=True)


def test_generation_logprob_is_the_sequence_logprob(backend):
    req = GenerateRequest(prompt("a terrible film"), max_tokens=5, temperature=0.8, seed=3)
    result = backend.generate([req])[0]
    ctx = backend.tokenizer(backend.render(req.prompt), add_special_tokens=False).input_ids
    # rescore the produced tokens; re-encoding the text may merge differently, so use the token count
    ll = backend.loglikelihood([LoglikelihoodRequest(req.prompt, result.text)])[0]
    assert result.logprob is not None and result.logprob < 0
    if ll.n_tokens == result.n_tokens and backend.tokenizer.eos_token_id not in ctx:
        assert result.logprob == pytest.approx(ll.logprob, abs=1e-3)


def test_device_auto_runs_where_torch_can(tiny_model_dir):
    """--device auto: a CUDA GPU when torch sees one, else the CPU in fp32 (issue 16 item 7)."""
    from taskfit.errors import UserError
    from taskfit.models.loading import resolve_device

    backend = HFBackend(tiny_model_dir, threads=1, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.describe()["device"] == expected
    assert backend.describe()["dtype"] == "float32" or expected == "cuda"  # fp32 on the CPU
    result = backend.loglikelihood([LoglikelihoodRequest(Prompt((Message("user", "hi"),)), "there")])[0]
    assert result.logprob < 0
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_streaming_gives_the_same_answer_in_pieces(backend):
    plain = GenerateRequest(prompt("the movie was"), max_tokens=12)
    whole = backend.generate([plain])[0]
    pieces: list[str] = []
    streamed = backend.generate_streaming(plain, pieces.append)
    assert streamed.text == whole.text == "".join(pieces)
    assert len(pieces) >= 2
    if len(whole.text) >= 3:  # with a stop string: the pieces never show it
        stop = whole.text[2:4]
        cut_pieces: list[str] = []
        request = GenerateRequest(prompt("the movie was"), max_tokens=12, stop=(stop,))
        cut = backend.generate_streaming(request, cut_pieces.append)
        assert "".join(cut_pieces) == cut.text == backend.generate([request])[0].text
        assert stop not in cut.text
