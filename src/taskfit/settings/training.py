"""The sections every training stage shares (tune, reward train, align): optimisation, LoRA and how a run is
run (bookkeeping, every field operational), and the field builders the stages' own sections use."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from taskfit.models.options import OPERATIONAL
from taskfit.strict import StrictModel


def lr_field(rates: dict[str, float], note: str = "") -> Any:
    shown = lambda rate: f"{rate:g}" if rate >= 0.01 else f"{rate:.0e}".replace("e-0", "e-")  # noqa: E731
    defaults = ", ".join(f"{shown(rate)} ({method})" for method, rate in rates.items())
    return Field(None, gt=0, description=f"learning rate; default {defaults}{note}")


class OptimSection(StrictModel):
    epochs: float = Field(1.0, gt=0, description="passes over the data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = Field(8, gt=0, description="rows per optimizer step (before accumulation)")
    gradient_accumulation: int = Field(1, gt=0, description="batches per optimizer step")
    lr: float | None = Field(None, gt=0, description="learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with a linear warm-up")
    precision: Literal["auto", "bf16"] = Field("auto", description="auto: fp32 on the CPU, bf16 (else fp16) mixed "
                                               "precision on a GPU; bf16: bf16 mixed precision on the CPU too "
                                               "(weights stay fp32; a CPU with AMX or AVX512-BF16 only; numbers "
                                               "change at about 1e-3)")


class LoraSection(StrictModel):
    rank: int = Field(8, gt=0, description="lora rank")
    alpha: int = Field(16, gt=0, description="lora alpha")
    dropout: float = Field(0.0, ge=0, lt=1, description="lora dropout (0: PEFT skips the dropout layer, which "
                                                         "otherwise keeps a copy of every projection's input)")
    target_modules: list[str] | None = Field(None, description="lora / ia3 modules (default: attention + MLP "
                                                               "projections for lora, k/v/down for ia3); adapter: "
                                                               "decoder-layer modules (default [mlp])")


class BookkeepingSection(StrictModel):
    """How a training run is run, not what it trains: every field is operational (left out of a run's identity, so
    a resumed run may change it)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where training runs; auto = a CUDA GPU when "
                                                   "torch sees one (bf16 / fp16 mixed precision there), else the CPU",
                                                   json_schema_extra=OPERATIONAL)
    output: Path | None = Field(None, description="output folder", json_schema_extra=OPERATIONAL)
    logging_steps: int = Field(5, gt=0, description="log the loss every N steps", json_schema_extra=OPERATIONAL)
    report_to: list[str] = Field(default_factory=lambda: ["none"],
                                 description="tensorboard, wandb or mlflow (the Trainer's report_to)",
                                 json_schema_extra=OPERATIONAL)
    threads: int | None = Field(None, gt=0, description="CPU threads (default: all cores)",
                                json_schema_extra=OPERATIONAL)
    progress: bool = Field(True, description="show progress bars", json_schema_extra=OPERATIONAL)


def micro_batch_field(where: str, default: int = 512) -> Any:
    return Field(default, ge=0, description=f"the tokens one forward / backward pass holds ({where}): a batch runs in "
                                         "passes of at most this many (0: the whole batch at once) - the same "
                                         "numbers, less memory and padding", json_schema_extra=OPERATIONAL)
