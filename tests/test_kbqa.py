"""KBQA: BM25 retrieval over character n-grams, knowledge-base files, and ranking metrics per example."""

import json

import pytest

from taskfit.api import Example
from taskfit.errors import UserError
from taskfit.tasks.retrieval import BM25Index, Triple, load_kb_file, triples_from_rows
from taskfit.tasks.task import load_task

KB = [Triple("高等数学", "出版社", "武汉大学出版社"), Triple("高等数学", "作者", "同济大学"),
      Triple("机械设计基础", "作者", "杨可桢"), Triple("机械设计基础", "出版社", "高等教育出版社"),
      Triple("罗育德", "民族", "汉族")]


def test_bm25_prefers_subject_and_predicate_named_in_the_question():
    index = BM25Index(KB + [KB[0]])  # duplicates are dropped
    assert len(index.triples) == 5
    top = index.search("《高等数学》是哪个出版社出版的？", k=3)
    assert top[0][0] == KB[0]
    assert top[0][1] > top[1][1] > 0
    assert index.search("机械设计基础这本书的作者是谁？", k=1)[0][0] == KB[2]
    assert index.search("罗育德是什么民族的人？", k=1)[0][0] == KB[4]


def test_bm25_on_the_real_split_finds_most_gold_triples(shared_data):
    rows = [json.loads(line) for line in (shared_data / "nlpcc2016_kbqa" / "train.jsonl").open(encoding="utf-8")]
    index = BM25Index(triples_from_rows(rows, "triple", "train"))
    hits = 0
    for row in rows[:100]:
        found = [t for t, _ in index.search(row["question"], 5)]
        hits += Triple(*row["triple"]) in found
    assert hits >= 60  # recall@5 over ~14k triples; a wrong scorer lands near 0


def test_kb_files(tmp_path):
    jsonl = tmp_path / "kb.jsonl"
    jsonl.write_text('{"subject": "a", "predicate": "b", "object": "c"}\n{"triple": ["d", "e", "f"]}\n\n',
                     encoding="utf-8")
    assert load_kb_file(jsonl) == [Triple("a", "b", "c"), Triple("d", "e", "f")]
    text = tmp_path / "kb.txt"
    text.write_text("高等数学 ||| 出版社 ||| 武汉大学出版社\n", encoding="utf-8")
    assert load_kb_file(text) == [KB[0]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": "a", "predicate": "b", "object": "c"}\n{"subject": "x"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="bad.jsonl:2"):
        load_kb_file(bad)
    with pytest.raises(UserError, match="not found"):
        load_kb_file(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="row 1"):
        triples_from_rows([{"triple": ["only", "two"]}], "triple", "x")


def test_kbqa_space_ranks_and_scores(tmp_path):
    kb = tmp_path / "kb.jsonl"
    kb.write_text("".join(json.dumps({"triple": [t.subject, t.predicate, t.object]}, ensure_ascii=False) + "\n"
                          for t in KB), encoding="utf-8")
    task = load_task("nlpcc_kbqa")
    space = task.space
    ex = Example(0, {"question": "《高等数学》是哪个出版社出版的？"}, "武汉大学出版社")
    space.setup([ex], kb=kb)
    assert space.kb_info["triples"] == 5
    assert "高等数学 | 出版社 | 武汉大学出版社" in space.prompt_extra(ex, scored_texts=False)
    candidates = space.candidates(ex)
    assert candidates[0] == "武汉大学出版社"
    # log-likelihood mode: the ranking by per-character log-probability decides rr/ap
    words = ["同济大学", "武汉大学出版社"]
    prediction, extra = space.from_scores(ex, words, [-2.0, -14.0])  # -0.5/char vs -2/char
    assert prediction == "同济大学"
    scored = space.score(ex, prediction, extra)
    assert scored["rr"] == 0.5 and scored["ap"] == 0.5 and scored["em"] == 0.0
    assert 0 < scored["rouge_l"] < 1  # shares 大学
    # generate mode: the answer it names goes first, the rest keep retrieval order
    scored = space.score(ex, "武汉大学出版社。")
    assert scored["ranked"][0] == "武汉大学出版社" and scored["rr"] == 1.0 and scored["em"] == 1.0
    assert space.parse("\n1. 高等数学 | 出版社 | 武汉大学出版社\n2. ...", ex) == ("武汉大学出版社", None)
    assert space.parse("2013-12-30。", ex) == ("2013-12-30", None)
    scored = space.score(ex, "不知道")
    assert scored["ranked"] == candidates and scored["em"] == 0.0 and scored["rouge_l"] == 0.0
