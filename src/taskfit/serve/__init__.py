"""``taskfit serve``: the web QA assistant (page, feedback, export) and an OpenAI-compatible API on one server."""

from __future__ import annotations

import logging
from pathlib import Path

from taskfit.paths import output_file, taskfit_home
from taskfit.settings import ServeConfig, ServeHTTPSection

log = logging.getLogger(__name__)


def default_db() -> Path:
    return taskfit_home() / "assistant.sqlite"


def build_app(config: ServeConfig):
    """The application for ``config``: the assistant (model loaded), the store, the generation gate."""
    # imported here so that `feedback export` and `loop`, which read only default_db and the store, load no model code
    from taskfit.serve.app import create_app
    from taskfit.serve.assistant import backend_for, load_assistants
    from taskfit.serve.gate import Gate
    from taskfit.serve.store import Store

    store = Store(output_file(config.db or default_db(), "--db"))  # checked before the model loads
    interrupted = store.fail_interrupted()
    if interrupted:
        log.warning("%d answer(s) were cut by the server stopping; they are marked failed (with the text saved) and "
                    "can be regenerated", interrupted)
    contestants = load_assistants(config)
    slots = config.max_concurrent or contestants[0].backend.generation_slots()
    settings = ServeHTTPSection.model_validate(config.model_dump(include=set(ServeHTTPSection.model_fields)))
    app = create_app(contestants[0], store, Gate(slots, config.max_waiting, config.wait_timeout), settings,
                     arena=contestants, load=lambda model, adapter: backend_for(config, model, adapter))
    log.info("store %s; %d generation slot(s); export %s; /v1 %s; arena %s", store.path, slots,
             "on (admin token set)" if settings.admin_secret() else "off (no --admin-token)",
             "needs the API key" if settings.api_secret() else "open",
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

