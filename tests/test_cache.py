"""The SQLite response cache: hits instead of compute, keys that separate what must differ, persistence."""

import json
import sqlite3

import pytest

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Message, Prompt
from taskfit.cli import main
from taskfit.models.cache import CachedBackend, ResponseCache
from taskfit.models.hf import HFBackend


class Counting:
    """Wraps a backend and counts the requests that reach it."""

    def __init__(self, inner):
        self.inner, self.name, self.seen = inner, inner.name, 0

    def render(self, prompt):
        return self.inner.render(prompt)

    def describe(self):
        return self.inner.describe()

    def loglikelihood(self, requests):
        self.seen += len(requests)
        return self.inner.loglikelihood(requests)

    def generate(self, requests):
        self.seen += len(requests)
        return self.inner.generate(requests)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFBackend(tiny_model_dir, batch_size=4, threads=1)


def prompt(text):
    return Prompt((Message("user", text),), "The sentiment is")


def test_hits_replace_compute_and_return_identical_results(tiny, tmp_path):
    counting = Counting(tiny)
    backend = CachedBackend(counting, ResponseCache(tmp_path / "c.sqlite"))
    ll = [LoglikelihoodRequest(prompt(f"review {i}"), " positive") for i in range(5)]
    gen = [GenerateRequest(prompt(f"review {i}"), ("\n",), 5) for i in range(3)]
    first_ll, first_gen = backend.loglikelihood(ll), backend.generate(gen)
    assert counting.seen == 8 and backend.stats["cache_misses"] == 8
    again_ll, again_gen = backend.loglikelihood(ll), backend.generate(gen)
    assert counting.seen == 8 and backend.stats["cache_hits"] == 8
    assert again_ll == first_ll and again_gen == first_gen
    # duplicates inside one batch are computed once
    backend.loglikelihood([LoglikelihoodRequest(prompt("new"), " x")] * 3)
    assert counting.seen == 9
    # a new process (new connection) sees the stored answers
    other = CachedBackend(Counting(tiny), ResponseCache(tmp_path / "c.sqlite"))
    assert other.loglikelihood(ll) == first_ll and other.inner.seen == 0
    assert sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_separate_what_must_differ(tiny, tmp_path):
    backend = CachedBackend(tiny, ResponseCache(tmp_path / "k.sqlite"))
    p = prompt("a review")
    greedy = [GenerateRequest(p, (), 4, 0.0, 1.0, seed) for seed in (1, 2)]
    sampled = [GenerateRequest(p, (), 4, 0.9, 0.95, seed) for seed in (1, 2)]
    assert backend.generate_key(greedy[0]) == backend.generate_key(greedy[1])  # greedy ignores the seed
    assert backend.generate_key(sampled[0]) != backend.generate_key(sampled[1])  # self-consistency paths
    assert backend.generate_key(sampled[0]) != backend.generate_key(greedy[0])
    assert backend.generate_key(GenerateRequest(p, (), 5)) != backend.generate_key(GenerateRequest(p, (), 4))
    assert backend.loglikelihood_key(LoglikelihoodRequest(p, " a")) != backend.loglikelihood_key(
        LoglikelihoodRequest(p, " b"))
    plain = CachedBackend(HFBackend(tiny.model_id, chat_template=False, threads=1), backend.cache)
    assert plain.loglikelihood_key(LoglikelihoodRequest(p, " a")) != backend.loglikelihood_key(
        LoglikelihoodRequest(p, " a"))  # another rendering, another key


def test_cli_runs_use_the_cache_unless_told_not_to(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "data" / "mini"
    data.mkdir(parents=True)
    rows = [{"text": f"movie {i} was {'great' if i % 2 else 'bad'}", "label": "positive" if i % 2 else "negative"}
            for i in range(6)]
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mini.yaml").write_text(
        "name: mini\ndataset: mini\neval_split: dev\nfields: {text: text}\n"
        "labels: [{value: negative}, {value: positive}]\nprompt: {input_template: '{text}', answer_prefix: 'It is'}\n")
    base = ["eval", "--task", str(tmp_path / "mini.yaml"), "--data-dir", str(tmp_path / "data"), "--model",
            f"hf:{tiny_model_dir}", "--threads", "1", "--no-progress", "--bootstrap-samples", "0",
            "--cache-path", str(tmp_path / "cache.sqlite")]
    runs = {}
    for name, extra in (("first", []), ("second", []), ("nocache", ["--no-cache"])):
        assert main([*base, "--output", str(tmp_path / name), *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert runs["first"]["backend_stats"]["cache_misses"] == 12 and runs["first"]["backend_stats"]["cache_hits"] == 0
    assert runs["second"]["backend_stats"]["cache_hits"] == 12 and runs["second"]["backend_stats"]["cache_misses"] == 0
    assert "cache_hits" not in runs["nocache"]["backend_stats"]
    assert (tmp_path / "first" / "samples.jsonl").read_text() == (tmp_path / "second" / "samples.jsonl").read_text()
    assert runs["second"]["metrics"] == runs["first"]["metrics"] == runs["nocache"]["metrics"]
