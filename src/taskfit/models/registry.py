"""Backends by ``--backend`` name, and the specialist head, imported only when chosen (the hf backend and the head
need torch, the other backends do not, so ``taskfit eval --backend openai`` never pays torch's import).

A backend is one class (:class:`~taskfit.models.base.Backend`, registered with
:func:`~taskfit.models.base.register_backend`) and its options class (:mod:`taskfit.models.options`). The configs,
the CLI's flag groups and ``taskfit serve`` read both through this module: the options class says what the backend
takes (flags, YAML keys, constructor keywords) and how it takes an adapter, the backend class loads the model,
prepares an adapter for it and says how many answers it generates at once. A built-in backend's module is imported
on first use (its line in :data:`BUILT_IN`); a backend registered elsewhere (a plugin, a test) is there as soon as
its class is registered.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from taskfit.errors import UserError
from taskfit.models.base import BACKENDS, Backend
from taskfit.models.options import BackendOptions, HFOptions, LlamaCppOptions, OpenAIOptions

BUILT_IN: dict[str, tuple[str, type[BackendOptions]]] = {
    "hf": ("taskfit.models.hf", HFOptions),
    "llamacpp": ("taskfit.models.llamacpp", LlamaCppOptions),
    "openai": ("taskfit.models.openai", OpenAIOptions),
}
"""name: (the module that registers its class, its options) — a built-in backend is one line here."""


def backend_names() -> list[str]:
    """Every backend ``--backend`` accepts: the built-in ones, then those registered since."""
    return [*BUILT_IN, *(name for name in BACKENDS if name not in BUILT_IN)]


def options_of(backend: str) -> type[BackendOptions]:
    """The options class of ``backend``, without importing a built-in backend's module."""
    if backend in BUILT_IN:
        return BUILT_IN[backend][1]
    if backend in BACKENDS:
        return BACKENDS[backend].Options
    raise UserError(f"unknown backend {backend!r}; available: {', '.join(backend_names())}")


def all_options() -> dict[str, type[BackendOptions]]:
    """Each backend's options class, by name."""
    return {name: options_of(name) for name in backend_names()}


def backend_class(backend: str) -> type[Backend]:
    """The class of backend ``backend``, importing its module on first use."""
    options_of(backend)  # an unknown name is refused with the list of known ones
    if backend not in BACKENDS:
        import_module(BUILT_IN[backend][0])
    return BACKENDS[backend]


def load_backend(backend: str, model: str, adapter: str | Path | None = None, **options) -> Backend:
    """Instantiate backend ``backend`` for ``--model`` spec ``model``, with ``adapter`` applied as that backend
    applies one (see :meth:`Backend.prepare_model`)."""
    cls = backend_class(backend)
    model, extra = cls.prepare_model(model, Path(adapter) if adapter else None)
    name, location = cls.resolve(model)
    return cls(location, display_name=name, **options, **extra)


def load_head(folder: str, threads: int | None = None):
    """The specialist head saved in ``folder`` (a :class:`~taskfit.models.head.HeadPredictor`)."""
    return import_module("taskfit.models.head").HeadPredictor(folder, threads=threads)
