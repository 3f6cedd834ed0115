"""The specialist head's network and its inference: a sentence encoder, mean pooling, a linear layer.

``taskfit tune --method head`` trains it (:mod:`taskfit.tuning.head`); ``taskfit eval --model head:<folder>``
predicts with :class:`HeadPredictor`. The encoder reads the example's fields: one field alone, two as a sentence
pair (STS-B), more joined by the separator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from taskfit.errors import UserError

CONFIG_FILE = "head_config.json"
HEAD_WEIGHTS = "head.safetensors"


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


def encoder_batch(tokenizer, texts: list[tuple[str, ...]], max_length: int):
    firsts = [t[0] for t in texts]
    seconds = [t[1] for t in texts] if len(texts[0]) == 2 else None
    return tokenizer(firsts, seconds, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


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

    def check(self, task_name: str, task_type: str, labels: list[str], score_range: tuple[float, float]) -> None:
        """Refuse a task whose answers differ from those the head was trained to give."""
        if task_type != self.config["task_type"]:
            raise UserError(f"head {self.folder} was trained for a {self.config['task_type']} task; "
                            f"{task_name!r} is {task_type}")
        if task_type == "classification" and labels != self.config["labels"]:
            raise UserError(f"head {self.folder} predicts the labels {self.config['labels']}; task {task_name!r} "
                            f"has {labels}")
        if task_type == "regression" and [float(v) for v in score_range] != self.config["score_range"]:
            raise UserError(f"head {self.folder} predicts scores in {self.config['score_range']}; task {task_name!r} "
                            f"scores in {list(score_range)}")

    def texts(self, examples) -> list[tuple[str, ...]]:
        """What the encoder reads for each example."""
        return [encoder_texts(example, self.tokenizer.sep_token or "|") for example in examples]

    def predict(self, texts: list[tuple[str, ...]], batch_size: int = 32,
                progress: bool = False) -> list[tuple[Any, dict]]:
        """(prediction, extras) per encoder input: a label value with the label probabilities, or a score."""
        order = sorted(range(len(texts)), key=lambda i: sum(len(t) for t in texts[i]), reverse=True)
        found: list[Any] = [None] * len(texts)
        with torch.inference_mode(), tqdm(total=len(texts), desc="head", disable=not progress, leave=False) as bar:
            for begin in range(0, len(order), batch_size):
                rows = order[begin : begin + batch_size]
                batch = encoder_batch(self.tokenizer, [texts[i] for i in rows], self.config["max_length"])
                outputs = self.model(**batch)
                for row, output in zip(rows, outputs):
                    found[row] = self._answer(output)
                bar.update(len(rows))
        return found

    def _answer(self, output: torch.Tensor):
        if self.config["outputs"] == 1:
            low, high = self.config["score_range"]
            value = min(max(float(output[0]), 0.0), 1.0) * (high - low) + low
            return round(value, 6), {}
        probs = torch.softmax(output.float(), dim=-1).tolist()
        values = self.config["labels"]
        best = max(range(len(values)), key=lambda i: probs[i])
        return values[best], {"probs": dict(zip(values, probs))}

    def describe(self) -> dict[str, Any]:
        return {"backend": "head", "model": f"head:{self.folder}", "path": str(self.folder),
                "encoder": self.config["encoder"], "parameters": sum(p.numel() for p in self.model.parameters()),
                "dtype": "float32", "threads": torch.get_num_threads()}
