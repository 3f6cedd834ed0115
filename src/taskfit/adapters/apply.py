"""Applying an adapter folder to a loaded causal LM, and telling whether it can be merged into the weights.

LoRA / IA3 are merged into the weights (no added latency); bottleneck adapters hang on the layers; prefix and
prompt tuning leave the weights as they are and give a KV cache of their virtual tokens that every forward pass
continues, at the positions training gave them (0..n-1), so a backend's batching and cache sharing apply unchanged.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

from taskfit.adapters.bottleneck import is_bottleneck, load_adapters
from taskfit.errors import UserError

CONFIG_FILE = "adapter_config.json"


@contextlib.contextmanager
def quiet_checkpointing_rename() -> Iterator[None]:
    """transformers renamed gradient checkpointing to activation checkpointing; TRL and PEFT still use the old name
    (a FutureWarning on every run that says nothing to a taskfit user)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)
        yield


def apply_adapter(model, adapter: Path):
    """``model`` with an adapter from ``taskfit tune`` applied, and what its virtual tokens are made of (or None):
    ``(peft type, prompt)`` — a prefix-tuning KV cache, or prompt-tuning embeddings still to be run once (the loader
    turns either into the virtual tokens' cache, :func:`taskfit.models.kv.virtual_cache`).

    (See the module docstring for what each kind becomes.)"""
    import torch
    from peft import PeftConfig, PeftModel

    if not (adapter / CONFIG_FILE).is_file():
        raise UserError(f"--adapter {adapter}: no adapter_config.json there; give a `taskfit tune` output folder")
    if is_bottleneck(adapter):
        load_adapters(model, adapter)
        return model, None
    try:
        config = PeftConfig.from_pretrained(adapter)
        with quiet_checkpointing_rename():
            peft_model = PeftModel.from_pretrained(model, adapter)
    except Exception as exc:  # noqa: BLE001 - peft raises ValueError, KeyError, RuntimeError (shape mismatch) ...
        raise UserError(f"--adapter {adapter} could not be applied to this model: "
                        f"{(str(exc).strip().splitlines() or [type(exc).__name__])[-1]}") from None
    if not config.is_prompt_learning:
        return peft_model.merge_and_unload(), None
    if config.peft_type not in ("PREFIX_TUNING", "PROMPT_TUNING"):
        raise UserError(f"--adapter {adapter}: {config.peft_type} adapters are not supported; use lora, ia3, "
                        "adapter, prefix or prompt")
    peft_model.eval()
    with torch.inference_mode():
        prompt = peft_model.get_prompt(batch_size=1)
    return peft_model.get_base_model(), (config.peft_type, prompt)


def check_mergeable(adapter: Path) -> None:
    """Refuse, before anything loads, an adapter that cannot be folded into the weights (``merge``, ``export``):
    only LoRA and IA3 can."""
    from peft import PeftConfig

    if not (adapter / CONFIG_FILE).is_file():
        raise UserError(f"{adapter} holds no PEFT adapter ({CONFIG_FILE}); give a `taskfit tune` output folder")
    if is_bottleneck(adapter):
        raise UserError(f"{adapter} holds bottleneck adapters: they are non-linear and cannot be merged into the "
                        "weights; evaluate them with `taskfit eval --adapter` instead")
    if PeftConfig.from_pretrained(adapter).is_prompt_learning:
        raise UserError(f"{adapter} is a prefix/prompt-tuning adapter: it adds virtual tokens and cannot be merged "
                        "into the weights; only lora and ia3 adapters can")
