"""``POST /api/admin/serve``: ``{"model", "adapter"?}`` (admin token) — serve another model from now on
(``taskfit loop`` promotes a candidate this way). Answers already streaming finish on the old backend, which is
closed once no answer is being generated."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from taskfit.errors import UserError
from taskfit.models.base import Backend
from taskfit.serve.gate import Gate
from taskfit.serve.http import ApiError
from taskfit.serve.protocol import ServeModelIn
from taskfit.serve.served import Served, require_admin, served

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/api/admin/serve")
def switch_model(body: ServeModelIn, request: Request, s: Served = Depends(served)) -> dict[str, Any]:
    require_admin(s, request, "switching the model")
    if s.load is None:
        raise ApiError(404, "this server cannot load another model", "not_found")
    with s.switching:
        try:
            backend = s.load(body.model, body.adapter)
        except UserError as exc:
            raise ApiError(422, str(exc)) from None
        old = s.assistant.swap(backend, body.model, body.adapter)
    log.info("now serving %s%s", body.model, f" + {body.adapter}" if body.adapter else "")
    threading.Thread(target=close_when_idle, args=(old, s.gate), name="taskfit-retire", daemon=True).start()
    return {"served": s.assistant.identity()}


def close_when_idle(backend: Backend, gate: Gate, limit_s: float = 3600.0) -> None:
    """Close a replaced backend once no answer is being generated (or after ``limit_s``: then answers still on it
    fail and say so)."""
    deadline = time.monotonic() + limit_s
    while gate.running and time.monotonic() < deadline:
        time.sleep(0.5)
    close = getattr(backend, "close", None)  # llama.cpp stops its server; an hf model is freed with its object
    try:
        if close is not None:
            close()
    except Exception:  # noqa: BLE001 - a backend that fails to close is logged, the server goes on
        log.exception("closing the replaced backend failed")
