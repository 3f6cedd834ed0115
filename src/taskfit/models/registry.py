"""Model names users type, resolved to a backend instance.

``--model`` is a known model name (``taskfit models`` lists them) or ``hf:<local folder or hub id>``.
"""

from __future__ import annotations

from taskfit.errors import UserError
from taskfit.models.base import BACKENDS, Backend
from taskfit.models.embedded import SMOLLM2_135M, EmbeddedModel

KNOWN_MODELS: dict[str, EmbeddedModel] = {SMOLLM2_135M.name: SMOLLM2_135M}


def resolve_model(spec: str) -> tuple[str, str]:
    """Map ``--model`` to (display name, path or hub id for the backend)."""
    if spec in KNOWN_MODELS:
        return spec, str(KNOWN_MODELS[spec].hf_folder())
    if spec.startswith("hf:") and len(spec) > 3:
        return spec[3:], spec[3:]
    raise UserError(
        f"unknown model {spec!r}; known models: {', '.join(sorted(KNOWN_MODELS))}, "
        "or hf:<local folder or hub id>"
    )


def load_backend(backend: str, model: str, **options) -> Backend:
    """Instantiate backend ``backend`` for ``--model`` spec ``model``."""
    # Import for the registration side effect of each backend module (heavy imports happen in constructors).
    from taskfit.models import hf, llamacpp, openai  # noqa: F401

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    cls = BACKENDS[backend]
    name, location = cls.resolve(model)
    return cls(location, display_name=name, **options)
