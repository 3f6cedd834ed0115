"""Shared fixtures: paths to ../shared/data, a tiny random causal LM built in the test, the embedded model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TASKFIT_SHARED_DATA", REPO.parent / "shared" / "data"))

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="session", autouse=True)
def private_response_cache(tmp_path_factory):
    """Runs in tests never read answers cached by earlier test sessions (or by the user's own runs)."""
    path = tmp_path_factory.mktemp("cache") / "responses.sqlite"
    old = os.environ.get("TASKFIT_CACHE")
    os.environ["TASKFIT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("TASKFIT_CACHE", None)
    else:
        os.environ["TASKFIT_CACHE"] = old


DATA_MISSING = "benchmark data not found"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The benchmark data folder that CI places beside the repository. Without it the tests that read it skip, and
    the run ends with a loud line saying how many; a folder that is there but unreadable (or
    ``TASKFIT_STRICT=1``, which ``.ci/run`` sets) fails them instead, so CI never passes without them."""
    if not (SHARED_DATA / "sst2" / "dev.jsonl").is_file():
        why = f"{DATA_MISSING} at {SHARED_DATA} (no sst2/dev.jsonl; set TASKFIT_SHARED_DATA)"
        if SHARED_DATA.is_dir() or os.environ.get("TASKFIT_STRICT") == "1":
            pytest.fail(f"{why}: the folder is there or TASKFIT_STRICT=1 asks for it")
        pytest.skip(why)
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say loudly how many tests a missing data folder skipped: a green run did not test them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if DATA_MISSING in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep("!", f"{len(skipped)} tests SKIPPED: {DATA_MISSING} at {SHARED_DATA}; this run "
                                        "did not test them (set TASKFIT_SHARED_DATA)", yellow=True, bold=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer and a ChatML template, random weights, seeded."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the movie was great and positive", "a terrible negative film", "Review: the sentiment is",
              "Answer with one word: positive or negative.", "system user assistant"] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def embedded_backend():
    """The real embedded model on the hf backend (converted once into $TASKFIT_HOME)."""
    from taskfit.models import load_backend

    return load_backend("hf", "smollm2-135m-instruct")


def chromium_path() -> str:
    path = os.environ.get("TASKFIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium not found: run `make setup` (it installs Debian's chromium) or set TASKFIT_CHROMIUM")
    return path


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (the page tests fail, not skip, without it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield browser
        browser.close()
