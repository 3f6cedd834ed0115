"""Cascade attention (a shared prefix read once per batch) against attention over the prefix copied into every row."""

import pytest
import torch
import torch.nn.functional as F

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.models import cascade
from taskfit.models.hf import HFBackend
from taskfit.models.kv import PrefixStore


class _Layer(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.layer_idx, self.num_key_value_groups = 0, groups


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("padded", [False, True])
def test_two_part_attention_equals_attention_over_prefix_and_own_columns(groups, padded):
    torch.manual_seed(0)
    rows, kv_heads, prefix, own, dim = 3, 2, 7, 5, 16
    heads = kv_heads * groups
    query = torch.randn(rows, heads, own, dim)
    keys, values = torch.randn(rows, kv_heads, own, dim), torch.randn(rows, kv_heads, own, dim)
    prefix_keys, prefix_values = torch.randn(1, kv_heads, prefix, dim), torch.randn(1, kv_heads, prefix, dim)
    pads = [0, 2, 4] if padded else [0, 0, 0]
    own_mask = torch.tril(torch.ones(own, own, dtype=torch.bool)).expand(rows, 1, own, own).clone()
    for row, pad in enumerate(pads):
        own_mask[row, :, :, :pad] = False
    out, _ = cascade.cascade_attention(_Layer(groups), query, keys, values, own_mask if padded else None,
                                       scaling=dim**-0.5, shared_prefix=[(prefix_keys, prefix_values)])
    # reference: every row gets its own copy of the prefix, heads repeated, one softmax over all columns
    full_keys = torch.cat([prefix_keys.expand(rows, -1, -1, -1), keys], dim=2).repeat_interleave(groups, dim=1)
    full_values = torch.cat([prefix_values.expand(rows, -1, -1, -1), values], dim=2).repeat_interleave(groups, dim=1)
    full_mask = torch.cat([torch.ones(rows, 1, own, prefix, dtype=torch.bool), own_mask], dim=-1)
    expected = F.scaled_dot_product_attention(query, full_keys, full_values, attn_mask=full_mask).transpose(1, 2)
    assert out.shape == (rows, own, heads, dim)
    for row, pad in enumerate(pads):  # a left pad's own output is never read; every real token's is compared
        torch.testing.assert_close(out[row, pad:], expected[row, pad:], atol=1e-5, rtol=1e-5)


def test_without_a_shared_prefix_it_is_sdpa():
    torch.manual_seed(1)
    query, keys, values = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 3, 8), torch.randn(2, 2, 3, 8)
    out, _ = cascade.cascade_attention(_Layer(2), query, keys, values, None, scaling=8**-0.5)
    expected = F.scaled_dot_product_attention(query, keys.repeat_interleave(2, 1), values.repeat_interleave(2, 1),
                                              is_causal=True).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def prompt(system: str, user: str, prefix: str = "") -> Prompt:
    return Prompt((Message("system", system), Message("user", user)), prefix)


DEMOS = " ".join(["the movie was great and positive", "a terrible negative film"] * 6)
TEXTS = ("great", "a terrible film indeed", "the movie was", "bad", "system user assistant")


def test_backend_scores_and_generates_the_same_with_and_without_it(tiny_model_dir):
    cascaded = HFBackend(tiny_model_dir, batch_size=4, threads=1)
    copied = HFBackend(tiny_model_dir, batch_size=4, threads=1)
    assert cascaded.runner.cascade  # a Llama on the CPU passes the load-time check
    copied.runner.cascade = False
    scoring = [LoglikelihoodRequest(prompt(DEMOS, t, "The sentiment is"), w)
               for t in TEXTS for w in (" positive", " negative and terrible")]  # multi-token: the cache is kept
    generating = [GenerateRequest(prompt(DEMOS, t), max_tokens=8) for t in TEXTS]
    used = {}
    for backend in (cascaded, copied):
        used[backend] = (backend.loglikelihood(scoring), [r.text for r in backend.generate(generating)])
    assert cascaded.stats == copied.stats and cascaded.stats["prefix_tokens_reused"] > 0  # the demos ran once
    for a, b in zip(used[cascaded][0], used[copied][0]):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.is_greedy == b.is_greedy
    assert used[cascaded][1] == used[copied][1]
    # and the same as every prompt run in full, nothing shared
    copied.runner.shared_prefix_min_tokens, copied.runner.prefixes = 10**9, PrefixStore(0)
    for a, b in zip(used[cascaded][0], copied.loglikelihood(scoring)):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_a_model_that_drops_the_keyword_keeps_sdpa(tiny_model_dir):
    from transformers import LlamaForCausalLM

    class Dropping(LlamaForCausalLM):  # an architecture that does not hand extra keywords to its attention
        def forward(self, *args, shared_prefix=None, **kwargs):
            return super().forward(*args, **kwargs)

    model = Dropping.from_pretrained(tiny_model_dir).eval()
    assert not cascade.enable(model)
    assert model.config._attn_implementation == "sdpa"
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert cascade.enable(model) and model.config._attn_implementation == cascade.NAME
