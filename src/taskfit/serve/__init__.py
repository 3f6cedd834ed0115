"""``taskfit serve``: the web QA assistant (page, feedback, export) and an OpenAI-compatible API on one server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from taskfit.errors import UserError
from taskfit.paths import output_file, taskfit_home
from taskfit.settings import ServeConfig

log = logging.getLogger(__name__)


def default_db() -> Path:
    return taskfit_home() / "assistant.sqlite"


def build_app(config: ServeConfig):
    """The application for ``config``: the assistant (model loaded), the store, the generation gate."""
    from taskfit.serve.app import Settings, create_app
    from taskfit.serve.assistant import backend_for, load_assistants
    from taskfit.serve.gate import Gate
    from taskfit.serve.store import Store

    store = Store(output_file(config.db or default_db(), "--db"))  # checked before the model loads
    interrupted = store.fail_interrupted()
    if interrupted:
        log.warning("%d answer(s) were cut by the server stopping; they are marked failed (with the text saved) and "
                    "can be regenerated", interrupted)
    contestants = load_assistants(config)
    assistant = contestants[0]
    slots = config.max_concurrent or assistant.backend.generation_slots()
    secret = lambda value, env: (value.get_secret_value() if value else os.environ.get(env)) or None  # noqa: E731
    settings = Settings(host=config.host, allowed_hosts=config.allowed_hosts,
                        admin_token=secret(config.admin_token, "TASKFIT_ADMIN_TOKEN"),
                        api_key=secret(config.serve_api_key, "TASKFIT_SERVE_API_KEY"),
                        max_question_chars=config.max_question_chars, max_messages=config.max_messages,
                        max_answer_tokens=config.max_answer_tokens,
                        answer_timeout=config.answer_timeout, criteria=criteria_of(config.criteria))
    app = create_app(assistant, store, Gate(slots, config.max_waiting, config.wait_timeout), settings,
                     arena=contestants, load=lambda model, adapter: backend_for(config, model, adapter))
    log.info("store %s; %d generation slot(s); export %s; /v1 %s; arena %s", store.path, slots,
             "on (admin token set)" if settings.admin_token else "off (no --admin-token)",
             "needs the API key" if settings.api_key else "open",
             f"on /arena ({len(contestants)} contestants)" if len(contestants) > 1 else "off")
    return app


def serve(config: ServeConfig) -> None:
    """Run the server until interrupted."""
    import uvicorn

    app = build_app(config)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: the assistant is reachable from other machines; put it behind a reverse proxy with "
                    "TLS and authentication", config.host)
        if config.host in ("0.0.0.0", "::") and not config.allowed_hosts:
            log.warning("only requests addressed to 127.0.0.1 or localhost are answered; pass --allowed-hosts with "
                        "the names clients use (or '*' behind a proxy that checks them)")
    uvicorn_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=5)
    server = uvicorn.Server(uvicorn_config)
    original = server.startup

    async def startup(sockets=None):
        await original(sockets)
        for bound in server.servers:
            for sock in bound.sockets:
                host, port = sock.getsockname()[:2]
                log.info("taskfit assistant listening on http://%s:%d (page /, API /v1)", host, port)
                print(f"listening http://{host}:{port}", flush=True)  # the line a parent process waits for

    server.startup = startup
    server.run()


DEFAULT_CRITERIA = ("helpful", "correct", "harmless")


def criteria_of(names: list[str]) -> list[str]:
    """``--criteria``: 'default' stands for helpful, correct, harmless; each name once, in order."""
    out: list[str] = []
    for name in names:
        for one in DEFAULT_CRITERIA if name.strip() == "default" else (name.strip(),):
            if not one or len(one) > 64 or not all(ch.isalnum() or ch in "_-" for ch in one):
                raise UserError(f"--criteria {name!r}: a criterion is a short name of letters, digits, - or _")
            if one not in out:
                out.append(one)
    return out

