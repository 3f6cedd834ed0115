"""Model names users type: the known (embedded) models and ``hf:<folder or hub id>``, resolved to what a backend
loads. ``taskfit models`` lists them."""

from __future__ import annotations

from pathlib import Path

from taskfit.errors import UserError
from taskfit.models.embedded import SMOLLM2_135M, EmbeddedModel

KNOWN_MODELS: dict[str, EmbeddedModel] = {SMOLLM2_135M.name: SMOLLM2_135M}
HEAD_PREFIX = "head:"  # --model head:<folder>: a specialist encoder + head from `taskfit tune --stage head`
HEAD_TASK_TYPES = ("classification", "regression")  # the task types a head answers
GGUF_TYPES = {"q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5, "q5_1": 6.0, "q8_0": 8.5, "f16": 16.0, "f32": 32.0}
"""The weight types ``taskfit export`` writes, with their bits per weight (block scales included: Q4_0 stores 32
4-bit weights and one f16 scale per block, 4.5 bits; Q4_1 adds an f16 minimum, 5.0). The ``gguf`` package quantizes
these; it has no quantizer for llama.cpp's K-quants (Q4_K, Q6_K ...), which need llama.cpp's ``llama-quantize``."""


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


def resolve_gguf(spec: str) -> tuple[str, str]:
    """``--model`` for GGUF backends: a known model (its embedded GGUF), ``gguf:<file>`` or a ``.gguf`` path."""
    if spec in KNOWN_MODELS:
        return spec, str(KNOWN_MODELS[spec].gguf_path())
    path = spec.removeprefix("gguf:")
    if path.endswith(".gguf"):
        if not Path(path).is_file():
            raise UserError(f"GGUF file {path} does not exist")
        return Path(path).name, path
    raise UserError(f"the llamacpp backend loads GGUF files: give a known model ({', '.join(sorted(KNOWN_MODELS))}) "
                    f"or gguf:<path to a .gguf file>, not {spec!r}")
