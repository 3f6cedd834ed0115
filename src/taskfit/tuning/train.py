"""``taskfit tune``: supervised fine-tuning of a causal LM on a task or a training file, with PEFT or in full.

Methods: ``lora``, ``ia3``, ``prefix``, ``prompt`` (PEFT), ``adapter`` (bottleneck adapters,
:mod:`taskfit.adapters.bottleneck`) and ``full``; ``head`` (a classifier on a sentence encoder) is in
:mod:`taskfit.tuning.head`. Training runs in the transformers
``Trainer`` (progress bar with the loss, checkpoints every ``save_steps``, ``--resume`` from the last checkpoint,
``report_to`` TensorBoard / W&B / MLflow), on the pairs of :mod:`taskfit.tuning.data` with the loss on answer
tokens only. The output folder holds the adapter (PEFT format) or the full model, the tokenizer, ``loss.png``,
``run_card.json`` and ``RUN_CARD.md`` (data, config, trainable parameters, time, tokens/s, peak memory).
"""

from __future__ import annotations

import json
import logging
import math
import random
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from taskfit.adapters.apply import check_mergeable
from taskfit.adapters.bottleneck import BottleneckConfig, add_adapters, save_adapters
from taskfit.config import StrictModel, read_yaml, validate
from taskfit.errors import UserError
from taskfit.models.loading import load_causal_lm

log = logging.getLogger(__name__)

METHODS = ("lora", "ia3", "prefix", "prompt", "adapter", "full", "head")
LLAMA_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LLAMA_MLP = ["gate_proj", "up_proj", "down_proj"]


class TuneConfig(StrictModel):
    """Everything ``taskfit tune`` needs; every CLI flag is also a YAML key (``--config tune.yaml``)."""

    method: Literal["lora", "ia3", "prefix", "prompt", "adapter", "full", "head"] = "lora"
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


def peft_config(config: TuneConfig, model_path: str, instruction: str | None):
    """The PEFT configuration of ``config.method`` (None for full fine-tuning)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    if config.method == "lora":
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=config.rank, lora_alpha=config.alpha,
                          lora_dropout=config.dropout,
                          target_modules=config.target_modules or LLAMA_ATTENTION + LLAMA_MLP)
    if config.method == "ia3":
        targets = config.target_modules or ["k_proj", "v_proj", "down_proj"]
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=targets,
                         feedforward_modules=[m for m in targets if m in LLAMA_MLP])
    if config.method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.virtual_tokens)
    if config.method == "prompt":
        init = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": instruction,
                "tokenizer_name_or_path": model_path} if instruction else {}
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.virtual_tokens, **init)
    return None


def training_samples(config: TuneConfig):
    """The samples to train on and a description of where they came from."""
    from taskfit.tuning.data import pairs_from_task, read_training_file

    if config.train_file is not None:
        samples = read_training_file(config.train_file)
        if config.limit:
            samples = samples[: config.limit]
        return samples, {"file": str(config.train_file), "n": len(samples)}, None
    task, examples = task_examples(config)
    info = {"task": task.name, "split": config.split, "n": len(examples)}
    return pairs_from_task(task, examples), info, task.config.prompt.instruction


def task_examples(config: TuneConfig, task=None):
    """The task (loaded unless given) and the examples of its split to train on: all, or a seeded random sample of
    ``limit`` rows (several data files are sorted by label, so the first rows can be one class)."""
    from taskfit.tasks.task import load_task

    task = task or load_task(config.task)
    examples = task.examples(config.split, config.data_dir)
    if config.limit and config.limit < len(examples):
        chosen = sorted(random.Random(config.seed).sample(range(len(examples)), config.limit))
        examples = [examples[i] for i in chosen]
    return task, examples


def merge(adapter: str | Path, output: str | Path) -> Path:
    """Merge a LoRA / IA3 adapter into its base model and save the result as a plain model folder (no added
    latency at inference; ``--model hf:<output>``)."""
    from peft import PeftConfig

    adapter, output = Path(adapter), Path(output)
    check_mergeable(adapter)
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} is not empty; choose another output folder")
    loaded = load_causal_lm(PeftConfig.from_pretrained(adapter).base_model_name_or_path, adapter=adapter)
    loaded.model.save_pretrained(output)
    loaded.tokenizer.save_pretrained(output)
    return output


@dataclass
class TuneResult:
    card: dict[str, Any]
    model: Any  # the trained model in memory (PEFT-wrapped for adapter methods)


def tune(config: TuneConfig, resume: bool = False) -> TuneResult:
    """Train, save the adapter or model, and write the loss curve and run card."""
    import torch
    from transformers import Trainer, TrainingArguments

    from taskfit.models.registry import resolve_model
    from taskfit.tuning.data import Tokenizer, collate

    if config.method == "head":
        from taskfit.tuning.head import train_head

        return train_head(config, resume)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output or f"runs/tune/{config.method}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()) and not resume:
        if not list(out.glob("checkpoint-*")):
            raise UserError(f"{out} is not empty; choose another --output")
        raise UserError(f"{out} holds checkpoints of an earlier run; pass --resume to continue it, or choose "
                        "another --output")
    start_step = _last_checkpoint_step(out) if resume else 0
    if resume and start_step == 0:  # before any loading: nothing to resume from
        raise UserError(f"--resume: no checkpoint-* folder in {out}")
    samples, data_info, instruction = training_samples(config)
    if not samples:
        raise UserError("no training samples")
    name, model_path = resolve_model(config.model)
    loaded = load_causal_lm(model_path)
    model, tokenizer = loaded.model, loaded.tokenizer
    encode = Tokenizer(tokenizer, config.chat_template)
    tokenized = [encode(sample, config.max_length) for sample in samples]
    answer_tokens = sum(sum(label != -100 for label in item.labels) for item in tokenized)
    if answer_tokens == 0:
        raise UserError("no answer tokens to learn from (check max_length and the answers)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    peft = peft_config(config, model_path, instruction)
    bottleneck = None
    if peft is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft)
    elif config.method == "adapter":
        bottleneck = BottleneckConfig(size=config.adapter_size, non_linearity=config.adapter_non_linearity,
                                      target_modules=config.target_modules or ["mlp"],
                                      base_model_name_or_path=model_path)
        add_adapters(model, bottleneck)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("%s on %d samples: %d trainable parameters of %d (%.3f%%)", config.method, len(samples), trainable,
             total, 100 * trainable / total)

    per_epoch = math.ceil(len(tokenized) / (config.batch_size * config.gradient_accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, learning_rate=config.learning_rate(),
        num_train_epochs=config.epochs, max_steps=config.max_steps, weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup_ratio * total_steps), lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_steps=config.save_steps, save_total_limit=3, seed=config.seed, data_seed=config.seed,
        report_to=config.report_to, use_cpu=True, disable_tqdm=not config.progress, remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer_class = Trainer if peft is not None and peft.is_prompt_learning else _answer_only_trainer(Trainer)
    trainer = trainer_class(model=model, args=args, train_dataset=_ListDataset(tokenized),
                            data_collator=lambda batch: collate(batch, pad_id,
                                                                lambda x: torch.tensor(x, dtype=torch.long)))
    train_start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    train_s = time.perf_counter() - train_start

    if bottleneck is not None:
        save_adapters(model, bottleneck, out)
    else:
        model.save_pretrained(out)  # PEFT: adapter_config.json + adapter weights; full: the whole model
    tokenizer.save_pretrained(out)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    _plot_loss(history, out / "loss.png", f"{config.method} on {data_info.get('task') or data_info.get('file')}")
    steps_done = trainer.state.global_step
    mean_length = sum(len(item.input_ids) for item in tokenized) / len(tokenized)
    tokens_per_step = mean_length * config.batch_size * config.gradient_accumulation
    card = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": config.method,
        "base_model": {"name": name, "path": model_path},
        "data": {**data_info, "tokens": sum(len(item.input_ids) for item in tokenized),
                 "answer_tokens": answer_tokens, "chat_template": encode.chat},
        "config": json.loads(config.model_dump_json()),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": trainable / total,
        "steps": steps_done,
        "final_loss": history[-1]["loss"] if history else result.training_loss,
        "first_loss": history[0]["loss"] if history else None,
        "train_loss": result.training_loss,
        "train_s": round(train_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "tokens_per_s": round((steps_done - start_step) * tokens_per_step / train_s, 1) if train_s > 0 else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resumed_from_step": start_step,
        "output": str(out),
    }
    write_run_card(out, card)
    return TuneResult(card, model)


def write_run_card(out: Path, card: dict[str, Any]) -> None:
    """``run_card.json`` and ``RUN_CARD.md`` of a training run (every method, the head included)."""
    (out / "run_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "RUN_CARD.md").write_text(_card_markdown(card), encoding="utf-8")
    log.info("wrote %s (loss %.4f -> %.4f)", out, card["first_loss"] or 0, card["final_loss"] or 0)


def _answer_only_trainer(trainer_class):
    """A Trainer whose loss computes the output layer only at positions that predict an answer token.

    Answers are a few tokens of each sample, and the output layer (hidden size x vocabulary, 49k words for
    SmolLM2) is the largest single matrix product per position; the model's own loss would run it, forward and
    backward, on every position. The positions kept are the union over the batch (``logits_to_keep`` as indices),
    so the loss is the same mean over answer tokens. Not for prefix / prompt tuning, which shift positions.
    """
    import torch

    class AnswerOnlyTrainer(trainer_class):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            targets = labels[:, 1:]
            keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
            outputs = model(**inputs, logits_to_keep=keep)
            chosen = targets[:, keep]
            loss = torch.nn.functional.cross_entropy(outputs.logits.float().flatten(0, 1), chosen.flatten(),
                                                     ignore_index=-100, reduction="sum")
            count = num_items_in_batch if num_items_in_batch is not None else (chosen != -100).sum()
            loss = loss / count
            return (loss, outputs) if return_outputs else loss

    return AnswerOnlyTrainer


def _last_checkpoint_step(out: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(steps, default=0)


class _ListDataset:
    """A list as a map-style dataset (the Trainer only needs ``len`` and indexing)."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _plot_loss(history: list[dict[str, Any]], path: Path, title: str) -> None:
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


def _card_markdown(card: dict[str, Any]) -> str:
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
