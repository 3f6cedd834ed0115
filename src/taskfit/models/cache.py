"""A response cache in SQLite: a request answered once is never computed again.

:class:`CachedBackend` wraps any backend. Each request is keyed by the model's identity (backend, model path,
a fingerprint of its weight files, dtype, chat-template switch) and the request itself: the *rendered* prompt
text (so a different chat template is a different key), the continuation, or the generation settings. A
greedy request (temperature 0) ignores its seed; a sampled one keeps it, so self-consistency paths (one seed
per example and path) stay distinct. Lookups and inserts are batched per call; the database runs in WAL mode,
so several taskfit processes can share it, and a crash loses at most the batch being written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from taskfit.api import GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult, Prompt
from taskfit.errors import UserError
from taskfit.models.base import Backend
from taskfit.paths import taskfit_home

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""
_LOOKUP_CHUNK = 500  # SQLite's default limit on bound parameters is far above this


def default_cache_path() -> Path:
    """``$TASKFIT_CACHE`` if set, else ``$TASKFIT_HOME/cache/responses.sqlite``."""
    return Path(os.environ.get("TASKFIT_CACHE") or taskfit_home() / "cache" / "responses.sqlite")


class ResponseCache:
    """Key -> JSON value store in one SQLite file (WAL journal, one transaction per batch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"--cache-path {self.path} is a directory; give a file path such as "
                            f"{self.path / 'responses.sqlite'}, or --no-cache")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(SCHEMA)
        except sqlite3.DatabaseError as exc:
            reason = ("is not an SQLite file" if "not a database" in str(exc) else
                      "cannot be written here" if "readonly" in str(exc) or "unable to open" in str(exc) else
                      f"cannot be used ({exc})")
            raise UserError(f"--cache-path {self.path} {reason}; give a writable path for taskfit's response cache, "
                            "or --no-cache") from None
        except OSError as exc:
            raise UserError(f"--cache-path {self.path}: {exc.strerror}; give a writable path for taskfit's response "
                            "cache, or --no-cache") from None

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            part = unique[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            for key, value in self.db.execute(f"SELECT key, value FROM responses WHERE key IN ({marks})", part):
                found[key] = json.loads(value)
        return found

    def put_many(self, kind: str, items: Sequence[tuple[str, Any]]) -> None:
        if not items:
            return
        now = time.time()
        with self.db:  # one transaction
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO responses (key, kind, value, created) VALUES (?, ?, ?, ?)",
                                [(key, kind, json.dumps(value), now) for key, value in items])

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def weights_fingerprint(location: str) -> str:
    """Names, sizes and modification times of a local model folder's files, or of one weights file (cheap;
    changes when weights do). A hub id (no local folder) is its own fingerprint."""
    folder = Path(location)
    if folder.is_file():  # a single weights file (GGUF)
        files = [folder]
    elif folder.is_dir():
        files = [p for p in folder.iterdir() if p.is_file()]
    else:
        return location
    parts = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


class CachedBackend(Backend):
    """Any backend, with answers looked up in (and stored to) a :class:`ResponseCache` first."""

    def __init__(self, inner: Backend, cache: ResponseCache):
        self.inner = inner
        self.cache = cache
        self.name = inner.name
        self.supports_json_schema = bool(getattr(inner, "supports_json_schema", False))
        self.generate_parallelism = int(getattr(inner, "generate_parallelism", 0))
        described = inner.describe()
        identity = {k: described.get(k) for k in ("backend", "path", "dtype", "chat_template")}
        identity["weights"] = weights_fingerprint(str(described.get("path", "")))
        if described.get("adapter"):  # a tuned adapter merged into the weights is another model
            identity["adapter"] = [described["adapter"], weights_fingerprint(described["adapter"])]
        self.identity = json.dumps(identity, sort_keys=True)
        self.hits = 0
        self.misses = 0

    # -- keys
    def _key(self, kind: str, prompt: Prompt, settings: list[Any]) -> str:
        blob = json.dumps([self.identity, kind, self.inner.render(prompt), settings], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def loglikelihood_key(self, request: LoglikelihoodRequest) -> str:
        return self._key("loglikelihood", request.context, [request.continuation])

    def generate_key(self, request: GenerateRequest) -> str:
        sampled = request.temperature > 0
        settings = [list(request.stop), request.max_tokens, request.temperature,
                    request.top_p if sampled else None, request.seed if sampled else None]
        if request.json_schema:
            settings.append(request.json_schema)
        return self._key("generate", request.prompt, settings)

    # -- the backend protocol
    def render(self, prompt: Prompt) -> str:
        return self.inner.render(prompt)

    def context_window(self) -> int | None:
        return self.inner.context_window()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._answer("loglikelihood", requests, self.loglikelihood_key, self.inner.loglikelihood,
                            LoglikelihoodResult)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self._answer("generate", requests, self.generate_key, self.inner.generate, GenerateResult)

    def _answer(self, kind: str, requests: Sequence[Any], key_of: Callable[[Any], str],
                compute: Callable[[list[Any]], list[Any]], result_type: type) -> list[Any]:
        keys = [key_of(r) for r in requests]
        stored = self.cache.get_many(keys)
        todo = [i for i, key in enumerate(keys) if key not in stored]
        # identical requests inside one batch are computed once
        first_of: dict[str, int] = {}
        for i in todo:
            first_of.setdefault(keys[i], i)
        if first_of:
            computed = compute([requests[i] for i in first_of.values()])
            fresh = {key: asdict(result) for key, result in zip(first_of, computed)}
            self.cache.put_many(kind, list(fresh.items()))
            stored.update(fresh)
        self.hits += len(requests) - len(first_of)
        self.misses += len(first_of)
        return [result_type(**stored[key]) for key in keys]

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "cache": str(self.cache.path)}

    @property
    def stats(self) -> dict[str, Any]:
        return {**dict(getattr(self.inner, "stats", {})), "cache_hits": self.hits, "cache_misses": self.misses}
