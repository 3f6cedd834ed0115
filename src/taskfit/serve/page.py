"""The chat page, rendered on the server: every text from users, the model or the knowledge base goes through
``escape``; one script and one stylesheet from ``/static``, nothing inline (the content security policy allows
nothing else)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

from taskfit.serve.assistant import Assistant
from taskfit.serve.store import Store


def render_page(assistant: Assistant, store: Store, session: str, conversation: str | None, *,
                arena: bool = False, criteria: Sequence[str] = ()) -> str:
    """The whole page as HTML; every text from users, the model or the knowledge base goes through ``escape``."""
    identity = assistant.identity()
    about = " · ".join(escape(str(v)) for v in (identity["model"], identity["adapter"], identity["task"]) if v)
    if arena:
        about += ' · <a href="/arena">Arena</a>'
    items = []
    for c in store.conversations(session):
        current = ' aria-current="page"' if c["id"] == conversation else ""
        items.append(f'<li><a href="/?c={escape(c["id"])}"{current}>{escape(c["title"])}</a></li>')
    turns = store.turns(session, conversation) if conversation else []
    rendered = "\n".join(render_turn(t.public()) for t in turns)
    body = LAYOUT.format(conversations="\n".join(items) or '<li class="none">none yet</li>',
                         conversation=escape(conversation or ""), turns=rendered,
                         criteria=escape(json.dumps(list(criteria))))
    return shell("taskfit assistant", "app.js", about, body)


def render_turn(turn: dict[str, Any]) -> str:
    sources = "".join(f"<li>{escape(s)}</li>" for s in turn["sources"])
    status = escape(turn["status"])
    error = f'<p class="error">{escape(turn["error"])}</p>' if turn.get("error") else ""
    notice = f'<p class="notice">{escape(turn["notice"])}</p>' if turn.get("notice") else ""
    parent = f' data-parent="{escape(turn["parent"])}"' if turn.get("parent") else ""
    return (f'<li class="turn" data-turn="{escape(turn["id"])}" data-status="{status}"{parent}>'
            f'<p class="question">{escape(turn["question"])}</p>'
            f'<p class="answer">{escape(turn["answer"].strip())}</p>{notice}{error}'
            f'<details class="sources"><summary>Sources ({len(turn["sources"])})</summary><ul>{sources}</ul></details>'
            f'</li>')


def shell(title: str, script: str, about: str, body: str) -> str:
    """A whole page: the head (the stylesheet, common.js and the page's own script, nothing inline), the header with
    ``about`` (HTML the caller escaped) and ``body``."""
    return f"""<!doctype html>
<html lang="zh-Hans">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/common.js" defer></script>
<script src="/static/{script}" defer></script>
</head>
<body>
<header><h1>{escape(title)}</h1><p class="about">{about}</p></header>
{body}
</body>
</html>
"""


LAYOUT = """<div class="layout">
<nav aria-label="conversations">
<a class="new" href="/">New conversation</a>
<ul id="conversations">
{conversations}
</ul>
</nav>
<main>
<ol id="turns" data-conversation="{conversation}" data-criteria="{criteria}">
{turns}
</ol>
<form id="ask" autocomplete="off">
<label for="question">Question</label>
<textarea id="question" name="question" rows="2" required placeholder="Ask a question / 请输入问题"></textarea>
<button type="submit">Send</button>
<p id="status" role="status" aria-live="polite"></p>
</form>
</main>
</div>
<footer>Answers come from a language model and can be wrong; your ratings and rewrites are stored to improve it.
</footer>"""
