"""Preference files in every format taskfit reads come back as the same pairs and rated rows; malformed rows name
file:line and key; unusable rows are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskfit.api import Message
from taskfit.data.preferences import PreferencePair, RatedRow, pair_row, rated_row, read_preferences
from taskfit.errors import UserError

SYSTEM = Message("system", "Be kind.")
PAIRS = [
    PreferencePair((Message("user", "How do I boil an egg?"),), "Put it in boiling water for 8 minutes.", "Fry it."),
    PreferencePair((Message("user", "你好吗？"), Message("assistant", "很好。"), Message("user", "天气呢？")),
                   "今天晴朗。", "不知道。"),
]


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def msgs(turns):
    return [{"role": m.role, "content": m.content} for m in turns]


def hh(turns) -> str:
    return "".join(f"\n\n{'Human' if m.role == 'user' else 'Assistant'}: {m.content}" for m in turns)


def same(pairs):
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


WRITERS = {
    "trl conversational": lambda p: pair_row(p),
    "trl conversational, implicit prompt": lambda p: {
        "chosen": msgs(p.prompt) + [{"role": "assistant", "content": p.chosen}],
        "rejected": msgs(p.prompt) + [{"role": "assistant", "content": p.rejected}]},
    "hh-rlhf transcripts": lambda p: {"chosen": hh((*p.prompt, Message("assistant", p.chosen))),
                                      "rejected": hh((*p.prompt, Message("assistant", p.rejected)))},
    "hh-rlhf prompt/chosen/rejected": lambda p: {"prompt": hh(p.prompt) + "\n\nAssistant:",
                                                 "chosen": " " + p.chosen, "rejected": " " + p.rejected},
    "llama-factory sharegpt ranking": lambda p: {
        "conversations": [{"from": "human" if m.role == "user" else "gpt", "value": m.content} for m in p.prompt],
        "chosen": {"from": "gpt", "value": p.chosen}, "rejected": {"from": "gpt", "value": p.rejected}},
}


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_pair_formats_round_trip(tmp_path, fmt):
    data = read_preferences(jsonl(tmp_path / "p.jsonl", [WRITERS[fmt](p) for p in PAIRS]))
    assert same(data.pairs) == same(PAIRS)
    assert data.formats == {fmt: 2}
    assert data.pairs[1].source == f"{tmp_path / 'p.jsonl'}:2"


def test_single_turn_formats_round_trip(tmp_path):
    first = PAIRS[0]
    rows = [{"prompt": "How do I boil an egg?", "chosen": first.chosen, "rejected": first.rejected, "margin": 2},
            {"instruction": "How do I boil an egg?", "chosen": first.chosen, "rejected": first.rejected},
            {"chosen": "How do I boil an egg? Put it in boiling water for 8 minutes.",
             "rejected": "How do I boil an egg? Fry it."}]
    data = read_preferences(jsonl(tmp_path / "p.jsonl", rows))
    assert [p.prompt for p in data.pairs[:2]] == [first.prompt] * 2
    assert [(p.chosen, p.rejected) for p in data.pairs[:2]] == [(first.chosen, first.rejected)] * 2
    assert data.pairs[0].margin == 2.0
    implicit = data.pairs[2]  # the shared beginning, cut at a word boundary, is the prompt
    assert implicit.prompt == (Message("user", "How do I boil an egg? "),)
    assert (implicit.chosen, implicit.rejected) == ("Put it in boiling water for 8 minutes.", "Fry it.")


def test_lmflow_containers(tmp_path):
    paired = tmp_path / "paired.json"
    paired.write_text(json.dumps({"type": "paired_conversation", "instances": [
        {"chosen": {"system": "Be kind.", "messages": msgs(PAIRS[1].prompt) + [
            {"role": "assistant", "content": PAIRS[1].chosen}]},
         "rejected": {"system": "Be kind.", "messages": msgs(PAIRS[1].prompt) + [
             {"role": "assistant", "content": PAIRS[1].rejected}]}}]}, ensure_ascii=False), encoding="utf-8")
    scored = tmp_path / "scored.json"
    scored.write_text(json.dumps({"type": "text_to_scored_textlist", "instances": [
        {"input": "Q?", "output": [{"text": "meh", "score": 0.5}, {"text": "best", "score": 2.0},
                                   {"text": "worst", "score": -1.0}]},
        {"input": "Q2?", "output": [{"text": "a", "score": 1}, {"text": "b", "score": 1}]}]}), encoding="utf-8")
    data = read_preferences([paired, scored])
    assert data.pairs[0].prompt == (SYSTEM, *PAIRS[1].prompt)
    assert (data.pairs[1].chosen, data.pairs[1].rejected, data.pairs[1].margin) == ("best", "worst", 3.0)
    assert data.dropped == {"fewer than two distinct scores": 1}


def test_rated_rows_and_conversions(tmp_path):
    rows = [rated_row(RatedRow(PAIRS[0].prompt, PAIRS[0].chosen, True)),
            {"instruction": "How do I boil an egg?", "output": "Fry it.", "kto_tag": False},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "kto_tag": True},
            {"prompt": "Hi", "completion": "Go away.", "label": False, "feedback_id": 7}]
    data = read_preferences(jsonl(tmp_path / "kto.jsonl", rows))
    assert [r.label for r in data.rated] == [True, False, True, False]
    assert data.rated[3].tags == (("feedback_id", 7),)
    pairs, unpaired = data.as_pairs()
    assert same(pairs) == [(PAIRS[0].prompt, PAIRS[0].chosen, "Fry it."),
                           ((Message("user", "Hi"),), "Hello!", "Go away.")]
    assert unpaired == 0
    both = read_preferences(jsonl(tmp_path / "dpo.jsonl", [pair_row(p) for p in PAIRS]))
    rated = both.as_rated()
    assert [(r.completion, r.label) for r in rated[:2]] == [(PAIRS[0].chosen, True), (PAIRS[0].rejected, False)]
    assert rated_row(rated[0])["completion"] == [{"role": "assistant", "content": PAIRS[0].chosen}]


def test_unusable_rows_are_counted_not_kept(tmp_path):
    rows = [pair_row(PAIRS[0]), {"prompt": "x", "chosen": "same", "rejected": "same"},
            {"prompt": "x", "chosen": " ", "rejected": "no"}]
    data = read_preferences(jsonl(tmp_path / "p.jsonl", rows))
    assert len(data.pairs) == 1 and data.dropped == {"chosen equals rejected": 1, "empty answer": 1}


@pytest.mark.parametrize("row, message", [
    ({"prompt": "x", "chosen": 3, "rejected": "b"}, r"p\.jsonl:2: key 'chosen': missing or not a string"),
    ({"prompt": "x", "completion": "y", "label": "yes"}, r"p\.jsonl:2: key 'label': must be true or false"),
    ({"prompt": "x", "chosen": "a", "rejected": "b", "margin": "big"}, r"p\.jsonl:2: key 'margin': must be a number"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
      "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
     r"p\.jsonl:2: keys 'chosen'/'rejected': the turns before the last answer differ"),
    ({"chosen": "\n\nAssistant: hi", "rejected": "\n\nAssistant: ho"}, r"p\.jsonl:2: key 'chosen': an HH-RLHF"),
    ({"conversations": [{"from": "robot", "value": "x"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, r"p\.jsonl:2: key 'conversations': each ShareGPT turn"),
    ({"question": "x"}, r"p\.jsonl:2: not a preference row taskfit knows"),
])
def test_malformed_rows_name_file_line_and_key(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        read_preferences(jsonl(tmp_path / "p.jsonl", [pair_row(PAIRS[0]), row]))


def test_the_shared_hh_rlhf_rows(shared_data):
    data = read_preferences(shared_data / "hh_rlhf" / "train.jsonl")
    assert len(data.pairs) + sum(data.dropped.values()) == 1800
    assert len(data.pairs) > 1700 and all(p.prompt[-1].role == "user" for p in data.pairs)
