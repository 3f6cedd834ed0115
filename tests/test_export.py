"""GGUF export: the exported file, run by llama.cpp, scores what the transformers model scores."""

from __future__ import annotations

import pytest

from taskfit.errors import UserError
from taskfit.models.export import export_gguf, interleave_rope_rows


def test_rope_rows_are_interleaved_per_head():
    import numpy as np

    # 2 heads of 4 rows: head rows [a0, a1, b0, b1] become [a0, b0, a1, b1]
    weight = np.arange(8)[:, None] * np.ones((1, 3))
    out = interleave_rope_rows(weight, heads=2)
    assert out[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_export_refuses_bad_requests_before_loading(tmp_path):
    with pytest.raises(UserError, match="end in .gguf"):
        export_gguf("smollm2-135m-instruct", tmp_path / "model.bin")
    with pytest.raises(UserError, match="--type q4"):
        export_gguf("smollm2-135m-instruct", tmp_path / "m.gguf", qtype="q4")
    (tmp_path / "exists.gguf").write_bytes(b"x")
    with pytest.raises(UserError, match="exists"):
        export_gguf("smollm2-135m-instruct", tmp_path / "exists.gguf")
    with pytest.raises(UserError, match="--template"):
        export_gguf(f"hf:{tmp_path}", tmp_path / "m.gguf")


def sentiment_requests():
    """Two reviews x (the two labels, a phrase that is no label), and what the hf backend scores for them."""
    from taskfit.api import LoglikelihoodRequest, Message, Prompt
    from taskfit.models import load_backend

    system = Message("system", "You are a sentiment classifier.")
    requests = [LoglikelihoodRequest(Prompt((system, Message("user", f"Review: {text}")),
                                            "The sentiment of the review is"), continuation)
                for text in ("a gorgeous, witty film", "dull and lifeless")
                for continuation in (" positive", " negative", " quite mixed really")]
    return requests, [r.logprob for r in load_backend("hf", "smollm2-135m-instruct").loglikelihood(requests)]


@pytest.mark.slow
def test_exported_gguf_scores_like_the_hf_model(tmp_path):
    from taskfit.models import load_backend

    requests, reference = sentiment_requests()
    f32 = export_gguf("smollm2-135m-instruct", tmp_path / "f32.gguf", qtype="f32")
    q8 = export_gguf("smollm2-135m-instruct", tmp_path / "q8.gguf", qtype="q8_0")
    assert q8["bytes"] < 0.3 * f32["bytes"] and q8["tensors"]["F32"] == 61  # norms stay F32
    exact = [r.logprob for r in load_backend("llamacpp", f"gguf:{tmp_path / 'f32.gguf'}").loglikelihood(requests)]
    assert exact == pytest.approx(reference, abs=0.02)  # same weights, another kernel library
    quantized = [r.logprob for r in load_backend("llamacpp", f"gguf:{tmp_path / 'q8.gguf'}").loglikelihood(requests)]
    assert quantized == pytest.approx(reference, abs=1.0)
    for row in range(2):  # each review's labels keep their order
        ref, got = reference[3 * row : 3 * row + 2], quantized[3 * row : 3 * row + 2]
        assert (ref[0] > ref[1]) == (got[0] > got[1])


@pytest.mark.slow
def test_every_low_bit_type_loads_in_llama_cpp_and_scores(tmp_path):
    from taskfit.models import load_backend
    from taskfit.models.catalog import GGUF_TYPES

    requests, reference = sentiment_requests()
    sizes = {}
    for qtype in ("q4_0", "q4_1", "q5_0", "q5_1"):
        summary = export_gguf("smollm2-135m-instruct", tmp_path / f"{qtype}.gguf", qtype=qtype)
        sizes[qtype] = summary["bytes"]
        assert summary["tensors"] == {"F32": 61, qtype.upper(): 211}  # norms stay F32, every matrix at the type
        # 134.5M weights at the type's bits per weight, plus the tokenizer and metadata (~1.5 MiB)
        assert summary["bytes"] == pytest.approx(134.5e6 * GGUF_TYPES[qtype] / 8 + 1.5 * 2**20, rel=0.05)
        got = [r.logprob for r in load_backend("llamacpp", f"gguf:{tmp_path / f'{qtype}.gguf'}")
               .loglikelihood(requests)]
        assert got == pytest.approx(reference, abs=4.0)
        for row in range(2):  # a label word stays far more likely than a phrase that is no label
            assert got[3 * row] > got[3 * row + 2] and got[3 * row + 1] > got[3 * row + 2]
    assert sizes["q4_0"] < sizes["q4_1"] < sizes["q5_0"] < sizes["q5_1"]
