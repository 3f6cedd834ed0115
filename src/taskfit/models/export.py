"""``taskfit export``: a tuned (LoRA / IA3 merged) or full fine-tuned Llama-family model as a GGUF file for the
llamacpp backend, quantized to Q8_0 (or Q4_0, Q4_1, Q5_0, Q5_1, F16, F32) with the ``gguf`` package that llama.cpp
maintains on PyPI (it has no K-quant quantizer: Q4_K and the like need llama.cpp's own ``llama-quantize``).

The tokenizer and the model's metadata (vocabulary, merges, special tokens, chat template, rope and norm settings)
are copied from a GGUF of the same base model — by default the embedded model's own file — and the weights come
from the transformers model. Two layouts differ between the two: transformers keeps each attention head's query /
key rows as two halves rotated together, llama.cpp's rope pairs neighbouring rows, so ``q_proj`` and ``k_proj``
rows are re-interleaved per head on the way out (the inverse of what transformers does when it reads a GGUF).
One-dimensional tensors (norms) stay F32, as llama.cpp's converter keeps them. Checked by a test: the exported
F32 file scores the same log-probabilities on the llamacpp backend as the model on the hf backend.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from taskfit.adapters.apply import check_mergeable
from taskfit.errors import UserError
from taskfit.models.catalog import GGUF_TYPES, KNOWN_MODELS, resolve_gguf, resolve_model
from taskfit.models.loading import load_causal_lm
from taskfit.paths import output_file, output_folder, taskfit_home
from taskfit.runs import RUN_CARD_MD, read_run_card, write_run_card

log = logging.getLogger(__name__)

TYPES = {name: (name.upper(), "ALL_F32" if name == "f32" else f"MOSTLY_{name.upper()}") for name in GGUF_TYPES}
"""--type -> (the tensors' GGML quantization type, the file's LlamaFileType)."""
SKIPPED_KEYS = ("GGUF.", "general.architecture", "general.file_type", "general.quantization_version")


def interleave_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Per head, rows ``[a0..a(h-1), b0..b(h-1)]`` (transformers' rotate-half layout) -> ``[a0, b0, a1, b1, ...]``
    (llama.cpp's)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def export_gguf(model: str, output: str | Path, *, adapter: str | Path | None = None, qtype: str = "q8_0",
                template: str | Path | None = None) -> dict[str, Any]:
    """Write ``model`` (with ``adapter`` merged in) to ``output`` as GGUF; returns a summary.

    One pass read top to bottom: checks, load, copy the template's metadata, convert each tensor, write."""
    import gguf

    if qtype not in TYPES:
        raise UserError(f"--type {qtype}: use one of {', '.join(TYPES)}")
    output = output_file(output, "export")
    if output.suffix != ".gguf":
        raise UserError(f"{output}: the output file name must end in .gguf")
    if output.exists():
        raise UserError(f"{output} exists; choose another output file")
    if template is None:
        if model not in KNOWN_MODELS:
            raise UserError("give --template <base model .gguf> (the tokenizer and metadata come from it); only the "
                            f"embedded models ({', '.join(KNOWN_MODELS)}) have one built in")
        template = resolve_gguf(model)[1]
    template = Path(template)
    if not template.is_file():
        raise UserError(f"template GGUF {template} does not exist")
    if adapter is not None:
        check_mergeable(Path(adapter))
    _, path = resolve_model(model)
    weights = load_causal_lm(path, adapter=adapter).model  # LoRA / IA3: merged into the weights
    config = weights.config
    if config.model_type != "llama":
        raise UserError(f"export writes Llama-family models; this one is {config.model_type!r}")

    reader = gguf.GGUFReader(str(template))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise UserError(f"template {template} is a {arch!r} model, not llama")
    template_tensors = {t.name: [int(d) for d in reversed(t.shape)] for t in reader.tensors}
    partial = output.with_name(output.name + ".partial")  # renamed into place when whole: a cut export leaves no .gguf
    writer = gguf.GGUFWriter(str(partial), arch)
    for key, field in reader.fields.items():
        if key.startswith(SKIPPED_KEYS):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    quant_name, file_type = TYPES[qtype]
    writer.add_file_type(getattr(gguf.LlamaFileType, file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    written, counts = set(), {}
    for name, tensor in weights.state_dict().items():
        if name == "lm_head.weight" and "output.weight" not in template_tensors:
            continue  # tied to the embeddings, as in the template
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise UserError(f"no GGUF name for tensor {name}; is this a Llama model?")
        data = tensor.detach().float().numpy()
        if name.endswith("self_attn.q_proj.weight"):
            data = interleave_rope_rows(data, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            data = interleave_rope_rows(data, kv_heads)
        expected = template_tensors.get(target)
        if expected is None or expected != list(data.shape):
            raise UserError(f"tensor {target} has shape {list(data.shape)}, the template {template} has {expected}: "
                            "the template must be a GGUF of this model's base")
        kind = getattr(gguf.GGMLQuantizationType, "F32" if data.ndim == 1 else quant_name)
        writer.add_tensor(target, gguf.quants.quantize(data, kind), raw_dtype=kind)
        written.add(target)
        counts[kind.name] = counts.get(kind.name, 0) + 1
    missing = sorted(set(template_tensors) - written)
    if missing:
        raise UserError(f"the model has no tensors for {missing[:3]} of the template; wrong template?")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(output)
    summary = {"output": str(output), "type": qtype, "template": str(template), "tensors": counts,
               "bytes": output.stat().st_size, "adapter": str(adapter) if adapter else None}
    log.info("wrote %s (%.1f MiB, %s)", output, summary["bytes"] / 2**20, counts)
    return summary


def merge(adapter: str | Path, output: str | Path) -> Path:
    """Merge a LoRA / IA3 adapter into its base model and save the result as a plain model folder (no added
    latency at inference; ``--model hf:<output>``)."""
    from peft import PeftConfig

    adapter, output = Path(adapter), Path(output)
    output_folder(output, "merge", fresh=True)
    check_mergeable(adapter)
    loaded = load_causal_lm(PeftConfig.from_pretrained(adapter).base_model_name_or_path, adapter=adapter)
    loaded.model.save_pretrained(output)
    loaded.tokenizer.save_pretrained(output)
    card = read_run_card(adapter)
    if card is not None:  # the merged model is the same tuned model: its evaluations keep their training cost
        write_run_card(output, {**card, "merged_from": str(adapter)},
                       (adapter / RUN_CARD_MD).read_text(encoding="utf-8") if (adapter / RUN_CARD_MD).is_file()
                       else "")
    return output


def gguf_for(model: str, adapter: Path | None) -> Path:
    """``adapter`` merged into ``model`` (or, without one, the model folder ``hf:DIR`` itself) as a Q8_0 GGUF,
    written once per content under ``$TASKFIT_HOME/gguf`` (what the llamacpp backend loads for an adapter)."""
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: no adapter_config.json there; give a `taskfit tune` output folder")
    folder = adapter if adapter is not None else Path(model.removeprefix("hf:"))
    if not folder.is_dir():
        raise UserError(f"{model}: no such model folder")
    digest = hashlib.sha256(model.encode() if adapter is not None else b"")
    for file in sorted(folder.glob("adapter_*" if adapter is not None else "*.safetensors")):
        digest.update(file.name.encode() + file.read_bytes())
    target = taskfit_home() / "gguf" / f"{digest.hexdigest()[:16]}-q8_0.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s%s to %s (once)", model, f" with {adapter} merged" if adapter else "", target)
        template = None if adapter is not None else _base_gguf(folder)
        export_gguf(model, target, adapter=adapter, qtype="q8_0", template=template)  # written whole or not at all
    return target


def _base_gguf(folder: Path) -> Path | None:
    """The GGUF whose tokenizer and metadata a model folder's export copies: its base model's, when the run card
    of the stage that wrote it names a built-in model (None: export_gguf says what to give)."""
    for _ in range(8):  # a model aligned from a model aligned from ...: follow the cards to the built-in base
        try:
            base = json.loads((folder / "run_card.json").read_text(encoding="utf-8"))["base_model"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if base.get("name") in KNOWN_MODELS:
            return KNOWN_MODELS[base["name"]].gguf_path()
        folder = Path(str(base.get("path", "")))
    return None
