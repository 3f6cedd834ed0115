"""Backends by ``--backend`` name, and the specialist head, imported only when chosen (the hf backend and the head
need torch, the other backends do not, so ``taskfit eval --backend openai`` never pays torch's import).

A backend module registers its class with :func:`~taskfit.models.base.register_backend` when imported; adding a
backend is one class in one module, plus its line in :data:`BACKEND_MODULES`.
"""

from __future__ import annotations

from importlib import import_module

from taskfit.errors import UserError
from taskfit.models.base import BACKENDS, Backend

BACKEND_MODULES = {"hf": "taskfit.models.hf", "llamacpp": "taskfit.models.llamacpp", "openai": "taskfit.models.openai"}


def backend_class(backend: str) -> type[Backend]:
    """The class of backend ``backend``, importing its module on first use."""
    if backend not in BACKEND_MODULES:
        raise UserError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKEND_MODULES))}")
    import_module(BACKEND_MODULES[backend])
    return BACKENDS[backend]


def load_backend(backend: str, model: str, **options) -> Backend:
    """Instantiate backend ``backend`` for ``--model`` spec ``model``."""
    cls = backend_class(backend)
    name, location = cls.resolve(model)
    return cls(location, display_name=name, **options)


def load_head(folder: str, threads: int | None = None):
    """The specialist head saved in ``folder`` (a :class:`~taskfit.models.head.HeadPredictor`)."""
    return import_module("taskfit.models.head").HeadPredictor(folder, threads=threads)
