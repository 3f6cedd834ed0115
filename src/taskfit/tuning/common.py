"""What every tuning stage shares: the config, the result, the examples of a task to train on, the loss plot and
the run card's text."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from taskfit.config import StrictModel, read_yaml, validate
from taskfit.errors import UserError
from taskfit.tasks.task import load_task

LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]


class TuneConfig(StrictModel):
    """Everything ``taskfit tune`` needs; every CLI flag is also a YAML key (``--config tune.yaml``)."""

    stage: Literal["sft", "head"] = Field("sft", description="sft: fine-tune the language model; head: train a "
                                          "sentence encoder + classification / regression head")
    method: Literal["lora", "ia3", "prefix", "prompt", "adapter", "full", "head"] = Field(
        "lora", description="sft: which weights train; 'head' is kept as a name for --stage head")
    model: str = "smollm2-135m-instruct"
    task: str | None = Field(None, description="task whose train split (zero-shot prompts) is the data")
    train_file: Path | None = Field(None, description="text2text / conversation JSON or JSONL instead of a task")
    data_dir: Path | None = None
    split: str = "train"
    limit: int | None = Field(None, gt=0)
    output: Path | None = None
    chat_template: bool = True
    seed: int = 1234
    # optimisation
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = Field(8, gt=0)
    gradient_accumulation: int = Field(1, gt=0)
    lr: float | None = Field(None, gt=0, description="default: 2e-4 (lora), 2e-3 (ia3), 1e-2 (prefix, prompt), "
                                                    "5e-4 (adapter), 2e-5 (full), 5e-5 (head)")
    weight_decay: float = 0.0
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_length: int = Field(512, gt=8)
    # method options
    rank: int = Field(8, gt=0, description="lora rank")
    alpha: int = Field(16, gt=0, description="lora alpha")
    dropout: float = Field(0.0, ge=0, lt=1, description="lora dropout (0: PEFT skips the dropout layer, which "
                                                         "otherwise keeps a copy of every projection's input)")
    target_modules: list[str] | None = Field(None, description="lora / ia3 modules (default: attention + MLP "
                                                               "projections for lora, k/v/down for ia3); adapter: "
                                                               "decoder-layer modules (default [mlp])")
    virtual_tokens: int = Field(20, gt=0, description="prefix / prompt tuning")
    adapter_size: int = Field(64, gt=0, description="bottleneck width of each adapter")
    adapter_non_linearity: Literal["relu", "gelu", "silu"] = "relu"
    encoder: str = Field("all-minilm-l6-v2", description="head: the sentence encoder under the head")
    # bookkeeping
    save_steps: int = Field(200, gt=0, description="checkpoint every N steps")
    logging_steps: int = Field(5, gt=0)
    report_to: list[str] = Field(default_factory=lambda: ["none"],
                                 description="tensorboard, wandb, mlflow (the Trainer's report_to)")
    threads: int | None = Field(None, gt=0)
    progress: bool = True

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
        return self.lr or {"lora": 2e-4, "ia3": 2e-3, "prefix": 1e-2, "prompt": 1e-2, "adapter": 5e-4, "full": 2e-5,
                           "head": 5e-5}[self.method]


def load_tune_config(path: str | Path | None, overrides: dict[str, Any]) -> TuneConfig:
    data = read_yaml(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    config = validate(TuneConfig, data, str(path) if path else "command line")
    if (config.task is None) == (config.train_file is None):
        raise UserError("give exactly one of --task (train on a task's split) or --train-file FILE")
    return config


@dataclass
class TuneResult:
    card: dict[str, Any]
    model: Any  # the trained model in memory (PEFT-wrapped for adapter methods)


def task_examples(config: TuneConfig, task=None):
    """The task (loaded unless given) and the examples of its split to train on: all, or a seeded random sample of
    ``limit`` rows (several data files are sorted by label, so the first rows can be one class)."""
    task = task or load_task(config.task)
    examples = task.examples(config.split, config.data_dir)
    if config.limit and config.limit < len(examples):
        chosen = sorted(random.Random(config.seed).sample(range(len(examples)), config.limit))
        examples = [examples[i] for i in chosen]
    return task, examples


def plot_loss(history: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if history:
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (answer tokens)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def card_markdown(card: dict[str, Any]) -> str:
    data = card["data"]
    source = f"task {data['task']} ({data['split']})" if "task" in data else f"file {data['file']}"
    return "\n".join([
        f"# Run card: {card['method']} on {source}",
        "",
        f"- base model: {card['base_model']['name']} ({card['base_model']['path']})",
        (f"- data: {data['n']} samples, {data['tokens']} tokens, {data['answer_tokens']} answer tokens with loss; "
         f"chat template {'on' if data['chat_template'] else 'off'}"),
        (f"- trainable parameters: {card['trainable_parameters']:,} of {card['total_parameters']:,} "
         f"({100 * card['trainable_share']:.3f}%)"),
        f"- steps: {card['steps']}, loss {card['first_loss']} -> {card['final_loss']}",
        f"- time: {card['train_s']} s training, {card['tokens_per_s']} tokens/s, peak RSS {card['peak_rss_mib']} MiB",
        "",
        "![loss](loss.png)",
        "",
        "Config:",
        "",
        "```json",
        json.dumps(card["config"], indent=2),
        "```",
        "",
    ])
