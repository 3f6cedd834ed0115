"""The assistant's page in a real headless Chromium against a real server and the embedded model on llama.cpp.

A three-turn chat streams visibly (at least two partial answers before each completes) and shows its sources;
thumbs and a better answer land in the database; script injected through questions and knowledge-base facts stays
text (nothing runs, no console error, not even a blocked inline script); Chinese is drawn with real glyphs.
"""

from __future__ import annotations

import sqlite3

import pytest

from serving import kbqa_task, running, write_kb
from taskfit.models.registry import load_backend
from taskfit.serve.app import create_app
from taskfit.serve.assistant import Assistant
from taskfit.serve.gate import Gate
from taskfit.serve.store import Store
from taskfit.settings import ServeHTTPSection

ATTACKS = ["<script>window.__pwned = 1</script>高等数学",
           '<img src=x onerror="window.__pwned = 2">线性代数',
           '"><svg onload="window.__pwned = 3">安德烈',
           "</textarea><script>window.__pwned = 4</script>",
           "<iframe srcdoc='<script>parent.__pwned = 5</script>'></iframe>"]
KB = [("高等数学", "出版社", "武汉大学出版社"), ("线性代数", "出版时间", "2013-12-30"),
      ("<script>window.__pwned = 6</script>高等数学", "作者", "<img src=x onerror='window.__pwned = 7'>"),
      ("安德烈", "国籍", "<b>法国</b>")]

# records each distinct text the newest answer shows, with the turn's status at that moment (the last delta and
# "done" can arrive in one network read, so the final text may first be seen with status "done")
WATCH = """() => { window.__shown = []; const turns = document.getElementById('turns');
  new MutationObserver(() => { const items = turns.querySelectorAll('li.turn'); const last = items[items.length - 1];
    if (!last) return; const text = last.querySelector('.answer').textContent; const seen = window.__shown;
    if (text && (!seen.length || seen[seen.length - 1].text !== text))
      seen.push({text, status: last.dataset.status}); })
  .observe(turns, {subtree: true, childList: true, characterData: true, attributes: true}); }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assistant")
    task = kbqa_task(write_kb(folder / "kb.jsonl", KB))
    backend = load_backend("llamacpp", "smollm2-135m-instruct", concurrency=2, threads=2)
    store = Store(folder / "assistant.sqlite")
    app = create_app(Assistant(backend, task=task, model="smollm2-135m-instruct", max_tokens=24), store,
                     Gate(2, 8, 30), ServeHTTPSection())
    with running(app) as base:
        yield base, folder / "assistant.sqlite"
    backend.close()


def open_page(browser, base):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (problems.append("dialog " + d.message), d.dismiss()))
    # (not "requestfailed": Chromium may report a fetch stream read to its end as ERR_ABORTED; a resource that fails
    # to load is a console error anyway)
    page.goto(base)
    return page, problems


def ask(page, question: str) -> dict:
    page.evaluate(WATCH)
    before = page.locator("li.turn").count()
    page.fill("#question", question)
    page.click("#ask button[type=submit]")
    turn = page.locator("li.turn").nth(before)
    turn.locator(".feedback").wait_for(timeout=120_000)  # controls appear once the answer is finished
    return {"status": turn.get_attribute("data-status"), "answer": turn.locator(".answer").text_content(),
            "question": turn.locator(".question").text_content(), "shown": page.evaluate("window.__shown"),
            "sources": turn.locator("details.sources li").all_text_contents(), "turn": turn}


def test_three_turns_stream_show_sources_and_feedback_lands_in_the_database(browser, server, tmp_path):
    base, db = server
    page, problems = open_page(browser, base)
    questions = ("《高等数学》是哪个出版社出版的？", "《线性代数》的出版时间是什么？", "安德烈是哪个国家的人？")
    turns = [ask(page, q) for q in questions]
    for turn in turns:
        assert turn["status"] == "done"
        partials = [s["text"] for s in turn["shown"] if s["status"] == "generating"]
        assert len(partials) >= 2, turn["shown"]  # streamed: partial answers before the whole one
        assert all(turn["answer"].startswith(p.strip()) for p in partials), turn["shown"]  # each a prefix of it
        assert turn["shown"][-1]["text"] == turn["answer"]
        assert turn["sources"]
    assert "高等数学 | 出版社 | 武汉大学出版社" in turns[0]["sources"]

    turns[0]["turn"].locator("button.up").click()
    turns[0]["turn"].locator(".note", has_text="Saved").wait_for()
    turns[1]["turn"].locator(".reason").fill("日期不对")
    turns[1]["turn"].locator("button.down").click()
    turns[1]["turn"].locator(".note", has_text="Saved").wait_for()
    turns[2]["turn"].locator("button.better").click()
    page.locator("form.rewrite textarea").fill("法国")
    page.locator("form.rewrite button").click()
    turns[2]["turn"].locator(".note", has_text="Saved").wait_for()

    rows = sqlite3.connect(db).execute("SELECT kind, reason, text FROM feedback ORDER BY created").fetchall()
    assert rows == [("up", None, None), ("down", "日期不对", None), ("better", None, "法国")]
    conversation = page.evaluate("document.getElementById('turns').dataset.conversation")
    assert page.url.endswith(f"/?c={conversation}")
    assert page.locator("#conversations a").all_text_contents() == [questions[0]]  # listed without a reload

    page.reload()  # the server-rendered conversation: the same three turns
    assert page.locator("li.turn").count() == 3
    assert page.locator("li.turn .question").all_text_contents() == [t["question"] for t in turns]
    page.screenshot(path=str(tmp_path / "assistant.png"), full_page=True)
    assert problems == []


def test_a_failed_answer_offers_regenerate_and_a_fitted_question_says_what_was_cut(browser, server):
    base, db = server
    page, problems = open_page(browser, base)
    first = ask(page, "《高等数学》是哪个出版社出版的？")
    turn_id = first["turn"].get_attribute("data-turn")
    with sqlite3.connect(db) as connection:  # as a server killed mid-answer leaves it after its restart
        connection.execute("UPDATE turns SET status = 'failed', answer = '武汉', error = 'the server stopped' "
                           "WHERE id = ?", (turn_id,))
    page.reload()
    failed = page.locator(f'li.turn[data-turn="{turn_id}"]')
    assert failed.get_attribute("data-status") == "failed"
    assert failed.locator("button.up").count() == 0  # no feedback on a cut answer, only a way to get a whole one
    page.evaluate(WATCH)
    failed.locator("button.regenerate").click()
    regenerated = page.locator("li.turn").nth(1)
    regenerated.locator(".feedback").wait_for(timeout=120_000)
    assert regenerated.get_attribute("data-status") == "done"
    assert regenerated.get_attribute("data-parent") == turn_id

    long = ask(page, "问" * 3000 + "《线性代数》的出版时间是什么？")  # ~6,000 tokens in a 4,096-token window
    notice = long["turn"].locator(".notice").text_content()
    assert "middle of your question was left out" in notice
    page.reload()
    assert page.locator("li.turn .notice").all_text_contents() == [notice]
    assert problems == []


def test_script_in_questions_and_facts_stays_text(browser, server):
    base, _ = server
    page, problems = open_page(browser, base)
    shown = [ask(page, attack) for attack in ATTACKS]
    assert [s["question"] for s in shown] == ATTACKS
    facts = {f for s in shown for f in s["sources"]}
    assert "<script>window.__pwned = 6</script>高等数学 | 作者 | <img src=x onerror='window.__pwned = 7'>" in facts
    page.reload()  # and once more rendered by the server
    assert page.locator("li.turn .question").all_text_contents() == ATTACKS
    for view in (page,):
        assert view.evaluate("window.__pwned") is None
        scripts = [s.get_attribute("src") for s in view.locator("script").all()]
        assert scripts == ["/static/common.js", "/static/app.js"]  # the page's own scripts, nothing injected
        assert view.locator("img, svg, iframe, b").count() == 0
    assert problems == []


def test_chinese_is_drawn_with_real_glyphs(browser, server):
    base, _ = server
    page, _ = open_page(browser, base)
    draw = """() => { const font = getComputedStyle(document.getElementById('question')).font;
      const draw = (ch) => { const c = document.createElement('canvas'); c.width = 48; c.height = 48;
        const x = c.getContext('2d'); x.font = font; x.fillText(ch, 4, 36); return c.toDataURL(); };
      return [draw('问'), draw('题'), draw('\\u0378'), draw('\\u0379')]; }"""
    first, second, missing_a, missing_b = page.evaluate(draw)
    assert missing_a == missing_b  # two unassigned code points draw the same empty box
    assert first != second and first != missing_a  # two CJK characters draw differently, not as boxes


@pytest.fixture(scope="module")
def arena_server(tmp_path_factory):
    """Two contestants on one llama.cpp backend told apart by their answer budgets, and an admin token."""
    folder = tmp_path_factory.mktemp("arena")
    task = kbqa_task(write_kb(folder / "kb.jsonl", KB))
    backend = load_backend("llamacpp", "smollm2-135m-instruct", concurrency=2, threads=2)
    contestants = [Assistant(backend, task=task, model=name, max_tokens=tokens)
                   for name, tokens in (("<b>model-long</b>", 32), ("model-short", 12))]
    store = Store(folder / "assistant.sqlite")
    app = create_app(contestants[0], store, Gate(2, 8, 30),
                     ServeHTTPSection(admin_token="secret-token", criteria=["correct"]), arena=contestants)
    with running(app) as base:
        yield base, folder / "assistant.sqlite"
    backend.close()


ARENA_WATCH = """() => { window.__arena = {a: [], b: []};
  for (const side of document.querySelectorAll('.side')) {
    const answer = side.querySelector('.answer'); const seen = window.__arena[side.dataset.side];
    new MutationObserver(() => { const text = answer.textContent;
      if (text && seen[seen.length - 1] !== text) seen.push(text); })
    .observe(answer, {subtree: true, childList: true, characterData: true}); } }"""


def test_an_arena_round_streams_two_answers_a_vote_is_stored_and_the_leaderboard_shows_it(browser, arena_server,
                                                                                           tmp_path):
    base, db = arena_server
    page, problems = open_page(browser, base)
    page.locator('header a[href="/arena"]').click()
    page.wait_for_url(f"{base}/arena")
    page.evaluate(ARENA_WATCH)
    page.fill("#question", "《高等数学》是哪个出版社出版的？")
    page.click("#ask button[type=submit]")
    page.locator(".vote").wait_for(state="visible", timeout=120_000)
    shown = page.evaluate("window.__arena")
    answers = {side: page.locator(f'.side[data-side="{side}"] .answer').text_content() for side in "ab"}
    for side in "ab":
        assert answers[side] and shown[side][-1] == answers[side]
    assert max(len(shown["a"]), len(shown["b"])) >= 2  # streamed: a partial answer before the whole one
    assert page.locator(".side .name").all_text_contents() == ["", ""]  # blind until the vote

    page.click('.vote button[data-winner="b"]')
    page.locator(".vote .note", has_text="Vote saved").wait_for()
    names = page.locator(".side .name").all_text_contents()
    assert sorted(n.split(": ", 1)[1] for n in names) == ["<b>model-long</b>", "model-short"]  # text, not markup
    assert page.locator(".side .name b").count() == 0
    votes = sqlite3.connect(db).execute("SELECT winner FROM votes").fetchall()
    assert votes == [("b",)]
    page.screenshot(path=str(tmp_path / "arena.png"), full_page=True)

    page.goto(f"{base}/admin")
    page.fill("#token", "wrong")
    page.click("#token-form button")
    page.locator("#status", has_text="token").wait_for()
    page.fill("#token", "secret-token")
    page.click("#token-form button")
    page.locator("#standings").wait_for(state="visible")
    rows = page.locator("#standings tbody tr").all_inner_texts()
    winner = names[1].split(": ", 1)[1]
    assert rows[0].startswith(winner) and len(rows) == 2
    assert page.locator("#pairs tbody tr td").nth(1).text_content() == "1–0–0"
    assert "w = 0.60: 194" in page.locator("#needed").text_content()
    page.screenshot(path=str(tmp_path / "leaderboard.png"), full_page=True)
    assert [p for p in problems if "401" not in p] == []  # the wrong token's 401 is the only console line


def test_an_answer_rated_on_a_criterion_lands_in_the_database(browser, arena_server):
    base, db = arena_server
    page, problems = open_page(browser, base)
    turn = ask(page, "《线性代数》的出版时间是什么？")["turn"]
    assert turn.locator(".ratings .criterion .name").all_text_contents() == ["correct"]
    turn.locator('.ratings button[aria-label="correct: bad"]').click()
    turn.locator(".note", has_text="Saved").wait_for()
    assert turn.locator(".ratings button.chosen").get_attribute("aria-label") == "correct: bad"
    rows = sqlite3.connect(db).execute("SELECT criterion, value FROM ratings").fetchall()
    assert rows == [("correct", "bad")]
    assert problems == []
