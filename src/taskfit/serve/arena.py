"""The arena: one question, two contestants answering blind side by side, a vote, and a leaderboard.

- ``GET /arena``: the arena page (only when the server has two or more contestants).
- ``POST /api/arena``: ``{"question"}`` → server-sent events: ``meta`` (battle, question, sources), ``delta``
  (``side``: a | b, text), ``done`` / ``error`` per side, then ``end``. Two contestants are drawn from a seed made
  for the battle (stored), in random order; both answers are turns stored before their first token.
- ``POST /api/arena/vote``: ``{"event", "battle", "winner": a|b|tie|both_bad}`` → committed, then answered with the
  names of the two sides; a repeated ``event`` id is acknowledged and stored once.
- ``GET /api/arena/leaderboard``: Bradley–Terry ratings with ties, bootstrap CIs, pairwise tests (admin token).
- ``GET /admin``: the leaderboard page (it asks for the admin token and sends it as a bearer header).
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from taskfit.metrics.bradley_terry import Leaderboard, leaderboard
from taskfit.serve.answering import answer_into, describe, event_stream, session_of, sse, with_session
from taskfit.serve.assistant import Assistant, PromptTooLong, contestant_name
from taskfit.serve.gate import Busy, Delta, Done, Event, Failed
from taskfit.serve.http import ApiError
from taskfit.serve.page import shell
from taskfit.serve.protocol import ArenaIn, VoteIn
from taskfit.serve.served import Served, question_of, require_admin, served, stored_once
from taskfit.serve.store import NotFound, Store

SIDES = ("a", "b")
NAV = '<a href="/">Chat</a> · <a href="/arena">Arena</a> ·\n<a href="/admin">Leaderboard</a>'  # the pages' header


def draw(seed: int, contestants: int) -> tuple[int, int]:
    """The two contestants of a battle, side A first: a random pair in random order, from the battle's seed."""
    first, second = random.Random(seed).sample(range(contestants), 2)
    return first, second


def votes_of(store: Store) -> list[tuple[str, str, str]]:
    """Each battle's vote that counts as (contestant A, contestant B, a | b | tie); both bad counts as a tie."""
    return [(contestant_name(v["a"].model, v["a"].adapter), contestant_name(v["b"].model, v["b"].adapter),
             "tie" if v["winner"] == "both_bad" else v["winner"]) for v in store.arena_votes()]


def arena_leaderboard(store: Store, names: Sequence[str] = (), *, resamples: int = 1000,
                      seed: int = 0) -> Leaderboard:
    votes = votes_of(store)
    if len({*names, *(v[0] for v in votes), *(v[1] for v in votes)}) < 2:
        raise ValueError("no arena votes yet (and fewer than two contestants)")
    return leaderboard(votes, resamples=resamples, seed=seed, names=names)


def leaderboard_markdown(board: Leaderboard) -> str:
    """The leaderboard as the CLI prints it: standings, the pairs, and how many votes find a difference."""
    lines = [f"{board.votes} votes; Bradley–Terry with ties (Davidson), Elo scale; 95% CIs from {board.resamples} "
             f"bootstrap resamples of the votes; tie parameter ν = {board.tie_parameter:.2f}", "",
             "| contestant | rating | 95% CI | votes | wins | losses | ties | win rate |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for s in board.standings:
        lines.append(f"| {s.name} | {s.rating:.0f} | [{s.low:.0f}, {s.high:.0f}] | {s.votes} | {s.wins} | "
                     f"{s.losses} | {s.ties} | {s.win_rate:.3f} |")
    lines += ["", "| pair | head-to-head (wins–losses–ties) | rating difference [95% CI] | sign test p | differs |",
              "|---|---|---|---:|---|"]
    for p in board.pairs:
        lines.append(f"| {p.a} vs {p.b} | {p.a_wins}–{p.b_wins}–{p.ties} | {p.difference:+.0f} "
                     f"[{p.low:+.0f}, {p.high:+.0f}] | {p.sign_p:.3g} | {'yes' if p.significant else 'no'} |")
    needed = board.as_dict()["votes_needed"]
    lines += ["", "Decided head-to-head votes a sign test needs (two-sided 0.05, 80% power) when one side truly wins "
              "a share w of them: " + ", ".join(f"w = {w}: {n}" for w, n in needed.items())]
    return "\n".join(lines) + "\n"


router = APIRouter()


def contestants_of(s: Served) -> Sequence[Assistant]:
    """The arena's contestants; 404 when the server has fewer than two."""
    if len(s.arena) < 2:
        raise ApiError(404, "the arena is off: start the server with --arena-adapter DIR or --arena-model NAME",
                       "not_found")
    return s.arena


@router.get("/arena", response_class=HTMLResponse, include_in_schema=False)
def arena_page(request: Request, s: Served = Depends(served)):
    contestants = contestants_of(s)
    session, new = session_of(request)
    return with_session(HTMLResponse(ARENA_PAGE.replace("{count}", str(len(contestants)))), session, new)


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
def admin_page():
    return HTMLResponse(ADMIN_PAGE)


@router.post("/api/arena")
def battle(body: ArenaIn, request: Request, s: Served = Depends(served)):
    contestants = contestants_of(s)
    session, new = session_of(request)
    question = question_of(s, body.question)
    seed = secrets.randbelow(2**31)
    chosen = [contestants[k] for k in draw(seed, len(contestants))]
    try:
        asked = [c.ask(question, [], seed=seed) for c in chosen]
    except PromptTooLong as exc:
        raise ApiError(413, f"{exc}; ask a shorter question") from None
    sides = [{"prompt": a.stored_prompt(), "rendered": a.rendered, "sources": a.sources, "model": c.model,
              "adapter": c.adapter, "task": c.task.name if c.task else None, "settings": a.settings(arena=True)}
             for c, a in zip(chosen, asked)]
    started = s.store.start_battle(session, question=question, seed=seed, sides=sides)
    works = {side: answer_into(s.store, c.backend, started[side], a.request)
             for side, c, a in zip(SIDES, chosen, asked)}
    meta = {"battle": started["battle"], "question": question,
            "sources": {side: a.sources for side, a in zip(SIDES, asked)}}
    return with_session(event_stream(battle_events(s, started, works, meta)), session, new)


async def battle_events(s: Served, started: dict[str, str], works: dict[str, Any], meta: dict[str, Any]):
    """``meta``, both sides' events as they come (tagged by side), then ``end``."""
    yield sse("meta", meta)
    queue: asyncio.Queue[tuple[str, Event | None]] = asyncio.Queue()

    async def pump(side: str) -> None:
        try:
            async for event in s.gate.stream(works[side], s.settings.answer_timeout):
                await queue.put((side, event))
        except Busy as exc:
            s.store.finish_turn(started[side], "", error=str(exc))
            await queue.put((side, Failed(exc)))
        finally:
            await queue.put((side, None))

    tasks = [asyncio.create_task(pump(side)) for side in SIDES]
    try:
        running = len(tasks)
        while running:
            side, event = await queue.get()
            if event is None:
                running -= 1
            else:
                yield side_event(side, started[side], event)
        yield sse("end", {"battle": started["battle"]})
    finally:
        for task in tasks:
            task.cancel()


def side_event(side: str, turn: str, event: Event) -> str:
    if isinstance(event, Delta):
        return sse("delta", {"side": side, "text": event.text})
    if isinstance(event, Done):
        return sse("done", {"side": side, "turn": turn, "answer": event.result.text})
    return sse("error", {"side": side, "turn": turn, "message": describe(event.error),
                         "busy": isinstance(event.error, Busy)})


@router.post("/api/arena/vote")
def vote(body: VoteIn, request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    session, _ = session_of(request)
    answer = stored_once(body.event, "no such battle", lambda: s.store.add_vote(
        session, body.event, body.battle, body.winner))
    try:
        found = s.store.battle(session, body.battle)
    except NotFound:
        raise ApiError(404, "no such battle", "not_found") from None
    return {**answer, **{side: contestant_name(found[side].model, found[side].adapter) for side in SIDES}}


@router.get("/api/arena/leaderboard")
def board(request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    require_admin(s, request, "the leaderboard")
    try:
        names = [contestant_name(c.model, c.adapter) for c in s.arena]  # now: the served one may have changed
        return arena_leaderboard(s.store, names).as_dict()
    except ValueError as exc:
        raise ApiError(404, str(exc), "not_found") from None


ARENA_PAGE = shell("taskfit arena", "arena.js", NAV, """<main class="arena">
<p class="about">Two of the {count} models answer each question; you do not see which until you vote.</p>
<form id="ask" autocomplete="off">
<label for="question">Question</label>
<textarea id="question" name="question" rows="2" required placeholder="Ask a question / 请输入问题"></textarea>
<button type="submit">Ask both</button>
<p id="status" role="status" aria-live="polite"></p>
</form>
<div id="battle" hidden>
<p class="question" id="asked"></p>
<div class="sides">
<section class="side" data-side="a"><h2>Model A</h2><p class="answer"></p><p class="name"></p></section>
<section class="side" data-side="b"><h2>Model B</h2><p class="answer"></p><p class="name"></p></section>
</div>
<div class="vote" hidden>
<button type="button" data-winner="a">A is better</button>
<button type="button" data-winner="b">B is better</button>
<button type="button" data-winner="tie">Tie</button>
<button type="button" data-winner="both_bad">Both are bad</button>
<span class="note" role="status"></span>
</div>
</div>
</main>""")

ADMIN_PAGE = shell("taskfit leaderboard", "admin.js", NAV, """<main class="admin">
<form id="token-form" autocomplete="off">
<label for="token">Admin token (taskfit serve --admin-token)</label>
<input id="token" type="password" required>
<button type="submit">Show the leaderboard</button>
</form>
<p id="status" role="status" aria-live="polite"></p>
<table id="standings" hidden><caption></caption>
<thead><tr><th>contestant</th><th>rating</th><th>95% CI</th><th>votes</th><th>wins</th><th>losses</th><th>ties</th>
<th>win rate</th></tr></thead><tbody></tbody></table>
<table id="pairs" hidden><caption>Pairs: head-to-head votes, rating difference with its 95% CI, sign test</caption>
<thead><tr><th>pair</th><th>wins–losses–ties</th><th>difference [95% CI]</th><th>sign test p</th><th>differs</th>
</tr></thead><tbody></tbody></table>
<p id="needed"></p>
</main>""")
