"""Feedback on answers and its export as training rows.

- ``POST /api/feedback``: ``{"event", "turn", "kind": up|down|better|pick, "reason"?, "text"?}`` → committed, then
  answered; a repeated ``event`` id is acknowledged and stored once.
- ``POST /api/rate``: ``{"event", "turn", "criterion", "value": good|bad}`` on the server's ``--criteria``; stored
  once per event, like feedback.
- ``GET /api/export?as=dpo|kto|sft[&where=correct=bad]``: JSONL training rows; needs ``Authorization: Bearer <admin
  token>``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from taskfit.serve.answering import session_of
from taskfit.serve.export import export_rows, parse_where
from taskfit.serve.http import ApiError, require_unicode
from taskfit.serve.protocol import FeedbackIn, RatingIn
from taskfit.serve.served import Served, require_admin, served, stored_once

router = APIRouter()


@router.post("/api/feedback")
def feedback(body: FeedbackIn, request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    session, _ = session_of(request)
    require_unicode([body.reason, body.text])
    return stored_once(body.event, "no such answer", lambda: s.store.add_feedback(
        session, body.event, body.turn, body.kind, body.reason, body.text))


@router.post("/api/rate")
def rate(body: RatingIn, request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    session, _ = session_of(request)
    criteria = s.settings.criteria
    if body.criterion not in criteria:
        raise ApiError(422, f"criterion {body.criterion!r}: this server rates "
                            f"{', '.join(criteria) or 'no criteria (start it with --criteria)'}")
    return stored_once(body.event, "no such answer", lambda: s.store.add_rating(
        session, body.event, body.turn, body.criterion, body.value))


@router.get("/api/export")
def export(request: Request, as_: Literal["dpo", "kto", "sft"] = Query("kto", alias="as"),
           where: list[str] = Query([], description="CRITERION=good|bad: only answers rated so"),
           s: Served = Depends(served)):
    require_admin(s, request, "export")
    try:
        rows = export_rows(s.store, as_, parse_where(where))
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return Response(body, media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="feedback-{as_}.jsonl"'})
