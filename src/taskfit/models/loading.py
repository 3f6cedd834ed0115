"""The one loader of a causal LM: from a local folder or a hub id, with an adapter applied and int8 layers on request.

The hf backend, ``taskfit merge``, ``taskfit export`` and training all load through :func:`load_causal_lm`, so a
model (+ adapter) is the same object everywhere and load errors read the same.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from taskfit.adapters.apply import apply_adapter
from taskfit.errors import UserError
from taskfit.models.kv import virtual_cache


@dataclass
class LoadedLM:
    """A loaded model, its tokenizer, and the KV cache of prefix / prompt virtual tokens (``None`` otherwise)."""

    model: Any
    tokenizer: Any
    virtual: Any = None


def resolve_device(device: str = "auto") -> str:
    """``auto``: ``cuda`` when torch sees a CUDA GPU, else ``cpu``; ``cuda`` without one is refused."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: use auto, cpu or cuda")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise UserError("--device cuda: torch sees no CUDA GPU here (a CPU build of torch, or no driver); use "
                        "--device auto or cpu")
    return "cuda" if device == "cuda" or (device == "auto" and available) else "cpu"


def dtype_for(device: str):
    """fp32 on CPU (bf16 matmuls are slow there and change results); bf16 on a GPU that has it, else fp16."""
    import torch

    if device == "cpu":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (Intel AMX, or AVX512-BF16); elsewhere oneDNN
    emulates them, which measured 25x slower than fp32 for a LoRA training step on an AMD EPYC without either."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def mixed_precision(precision: str, device: str) -> str | None:
    """The mixed precision training and scoring run in (the weights stay fp32): ``precision`` ``auto`` is bf16 on a
    GPU that has it, else fp16, and none (fp32) on the CPU; ``bf16`` is bf16 on the CPU too, refused on a CPU that
    would emulate it (:func:`cpu_has_bf16`)."""
    import torch

    if precision not in ("auto", "bf16"):
        raise UserError(f"--precision {precision!r}: use auto or bf16")
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else ("fp16" if precision == "auto" else _no_gpu_bf16())
    if precision == "auto":
        return None
    if not cpu_has_bf16():
        raise UserError("--precision bf16: this CPU has no bf16 instructions (neither AMX nor AVX512-BF16), so bf16 "
                        "would be emulated - a LoRA step measured 25x slower than fp32 on such a CPU; leave "
                        "--precision at auto (fp32 here)")
    return "bf16"


def _no_gpu_bf16():
    raise UserError("--precision bf16: this GPU has no bf16; leave --precision at auto (fp16 mixed precision there)")


def autocast(mixed: str | None, device: str):
    """A context in which forward passes run in ``mixed`` precision (``bf16`` / ``fp16``; ``None``: as they are)."""
    import contextlib

    import torch

    if mixed is None:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16 if mixed == "bf16" else torch.float16)


def load_causal_lm(location: str | Path, adapter: str | Path | None = None, quantize: str = "none",
                   device: str = "cpu") -> LoadedLM:
    """Load the causal LM at ``location`` (a folder or hub id) on ``device`` (``cpu`` / ``cuda``, see
    :func:`resolve_device`; fp32 on CPU, bf16 / fp16 on a GPU), apply ``adapter`` (a `taskfit tune` folder: LoRA /
    IA3 merged, bottleneck hung on the layers, prefix / prompt as virtual tokens) and, with ``quantize="int8"``
    (CPU only), swap its linear layers for dynamic int8 ones."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_id = str(location)
    if quantize not in ("none", "int8"):
        raise UserError(f"quantize={quantize!r}: use none or int8")
    if quantize == "int8" and device != "cpu":
        raise UserError("--quantize int8 is torch's CPU dynamic quantization; on a GPU use --device cuda alone "
                        "(bf16 / fp16) or --device cpu")
    _check_reachable(model_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=dtype_for(device))
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, hub errors ...
        raise _load_error(model_id, exc) from None
    if device != "cpu":
        model = model.to(device)
    virtual = None
    if adapter:
        model, learned = apply_adapter(model, Path(adapter))
        if learned is not None:
            virtual = virtual_cache(model, learned)
    if quantize == "int8":
        model = quantize_int8(model)
    return LoadedLM(model, tokenizer, virtual)


INT8_KEEP_FP32 = ("down_proj",)  # linear layers left in fp32 by --quantize int8, besides the output layer


def quantize_int8(model, keep_fp32: tuple[str, ...] = INT8_KEEP_FP32):
    """``model`` with its linear layers replaced by torch's dynamic int8 version (weights int8 per output channel,
    activations quantized per tensor on the fly), except two kinds kept in fp32: the output layer (tied to the
    embeddings in small models; its errors move log-probabilities directly) and the MLP output projection
    (``down_proj``), whose input, the gated product, has outlier activations that per-tensor int8 destroys. Measured
    on SST-2 dev (100 rows, SmolLM2-135M): quantizing every layer but the output fell from 0.81 to 0.52 accuracy;
    keeping ``down_proj`` in fp32 gave 0.80 (benchmarks/int8_layers.py)."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    output = model.get_output_embeddings()
    spec = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not output
            and not name.endswith(keep_fp32)}
    with warnings.catch_warnings():  # torch marks its quantized tensor types deprecated (in favour of torchao)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)  # no second copy of the weights


def _check_reachable(model_id: str) -> None:
    """Fail in seconds, not after minutes of retries, for a hub id that is neither cached nor reachable."""
    if Path(model_id).exists():
        return
    if _looks_local(model_id):
        raise _load_error(model_id, FileNotFoundError(model_id))
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return
    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return  # in the local hub cache: transformers can load it offline
    if constants.HF_HUB_OFFLINE:
        raise _load_error(model_id, OSError("HF_HUB_OFFLINE is set and the model is not in the local cache"))
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        raise _load_error(model_id, OSError(f"cannot reach {host}: {exc}")) from None


def _looks_local(model_id: str) -> bool:
    """A path rather than a hub id ("owner/name")."""
    return model_id.startswith((".", "/", "~")) or model_id.count("/") > 1


def _load_error(model_id: str, exc: Exception) -> UserError:
    """Explain a failed load: a missing local folder, an unreachable hub, or a folder that is no model."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    path = Path(model_id)
    if path.exists():
        return UserError(f"could not load a causal LM from {path}: {first}")
    if _looks_local(model_id):
        return UserError(f"model folder {model_id} does not exist; give an existing folder or a hub id")
    return UserError(
        f"model {model_id!r} is not a local folder and could not be fetched from the Hugging Face Hub "
        f"(no network, or no such repo): {first}. Download it on a machine with network and pass "
        "--model hf:<local folder>, or use the embedded model smollm2-135m-instruct"
    )
