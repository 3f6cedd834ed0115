"""Training data for supervised fine-tuning: (context, answer) pairs tokenized with the loss on the answer only.

Pairs come from a task — the exact prompt zero-shot evaluation builds (:func:`taskfit.prompting.prompts.task_prompt`:
system prompt, instruction, input, answer prefix), rendered with the model's chat template by the same code the hf
backend evaluates with, and the gold
answer as the continuation the backend scores — so training and evaluation prompts cannot drift apart. Or from
files:

- LMFlow-style JSON: ``{"type": "text2text", "instances": [{"input": ..., "output": ...}]}`` or
  ``{"type": "conversation", "instances": [{"messages": [{"role": ..., "content": ...}, ...]}]}``;
- a JSON list (alpaca_data.json) or JSONL, one row per item / line, each in any of the formats users already have:
  ``{"input", "output"}`` (LMFlow text2text), ``{"messages": [{role, content}]}`` (OpenAI / TRL conversational),
  ``{"instruction", "input"?, "output", "system"?}`` (alpaca), ``{"conversations": [{"from": "human"|"gpt"|"system",
  "value"}], "system"?}`` (ShareGPT), ``{"prompt": str, "completion": str}`` (TRL prompt-completion) or
  ``{"prompt": [messages], "completion": [messages]}`` (TRL conversational prompt-completion).

A malformed file is refused with the file, the line (or instance) and what is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.api import Message, Prompt
from taskfit.data.records import alpaca_prompt, messages, read_rows, sharegpt, text
from taskfit.errors import UserError
from taskfit.models.base import encode_pair
from taskfit.models.hf import encode_with, render_with
from taskfit.prompting.prompts import gold_continuation, task_prompt

IGNORE = -100  # label of tokens without loss (prompt, padding)


@dataclass(frozen=True)
class Pair:
    """One supervised example: what the model reads and what it must answer."""

    prompt: Prompt
    answer: str


@dataclass(frozen=True)
class Conversation:
    """A multi-turn example: every assistant turn is a target."""

    messages: tuple[Message, ...]


Sample = Pair | Conversation


def pairs_from_task(task, examples: Sequence[Any]) -> list[Pair]:
    """The zero-shot prompt of each example and its gold answer, as the hf backend would score it."""
    pairs = []
    for example in examples:
        prompt = task_prompt(task, example)
        pairs.append(Pair(prompt, gold_continuation(task, example, prompt)))
    return pairs


def read_training_file(path: str | Path) -> list[Sample]:
    """Samples of a text2text / conversation file (JSON document or JSONL); errors name the line."""
    rows, kind = read_rows(path, "training file", ROW_SHAPES, ("text2text", "conversation"))
    return [_sample(row, where, kind) for where, row in rows]


ROW_SHAPES = ('{"input", "output"}, {"messages": [...]}, alpaca {"instruction", "input", "output"}, ShareGPT '
              '{"conversations": [{"from", "value"}]} or TRL {"prompt", "completion"}')


def _sample(item: Any, where: str, kind: str | None = None) -> Sample:
    """One training row in whichever known format its keys say (see the module docstring)."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: expected an object, got {type(item).__name__}")
    if "messages" in item and kind != "text2text":
        return _conversation(messages(item["messages"], where, "messages"), where)
    if kind == "conversation":
        raise UserError(f"{where}: a conversation instance needs 'messages'")
    if "conversations" in item:  # ShareGPT
        return _conversation(sharegpt(item, where), where)
    if "instruction" in item:  # alpaca
        return _pair(Prompt(tuple(alpaca_prompt(item, where))), text(item, "output", where), where)
    if "prompt" in item and "completion" in item:  # TRL prompt-completion, standard or conversational
        prompt, completion = item["prompt"], item["completion"]
        if isinstance(prompt, list) and isinstance(completion, list):
            return _conversation(messages(prompt, where, "prompt") + messages(completion, where, "completion"),
                                 where)
        return _pair(Prompt((Message("user", text(item, "prompt", where)),)), text(item, "completion", where),
                     where)
    if "input" in item or "output" in item:
        return _pair(Prompt((Message("user", text(item, "input", where)),)), text(item, "output", where), where)
    raise UserError(f"{where}: not a training row taskfit knows (keys {sorted(item)}); use one of {ROW_SHAPES}")


def _pair(prompt: Prompt, answer: str, where: str) -> Pair:
    if not answer.strip():
        raise UserError(f"{where}: empty output (nothing to learn)")
    return Pair(prompt, answer)


def _conversation(messages: list[Message], where: str) -> Conversation:
    if not any(m.role == "assistant" for m in messages):
        raise UserError(f"{where}: a conversation needs at least one assistant turn to learn from")
    return Conversation(tuple(messages))


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


class Tokenizer:
    """Renders and tokenizes samples exactly as the hf backend does (chat template or plain text)."""

    def __init__(self, tokenizer, chat_template: bool = True):
        self.tok = tokenizer
        self.chat = bool(chat_template and tokenizer.chat_template)
        self.eos = tokenizer.eos_token_id

    def render(self, prompt: Prompt) -> str:
        return render_with(self.tok, prompt, self.chat)

    def encode(self, text: str) -> list[int]:
        return encode_with(self.tok, text, self.chat)

    def bare(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def __call__(self, sample: Sample, max_length: int) -> Tokenized:
        if isinstance(sample, Pair):
            ctx, answer = encode_pair(self.encode, self.bare, self.render(sample.prompt), sample.answer)
            answer = answer + ([self.eos] if self.eos is not None else [])  # learn to stop after the answer
            ids, labels = ctx + answer, [IGNORE] * len(ctx) + answer
        else:
            ids, labels = self._conversation(sample)
        if len(ids) > max_length:  # keep the end: the answer is what matters
            ids, labels = ids[-max_length:], labels[-max_length:]
        return Tokenized(ids, labels)

    def _conversation(self, sample: Conversation) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        messages = list(sample.messages)
        for i, message in enumerate(messages):
            if message.role != "assistant":
                continue
            context = self.encode(self.render(Prompt(tuple(messages[:i]))))
            if context[: len(ids)] != ids:
                raise UserError("the chat template does not render conversations prefix by prefix; "
                                "split the conversation into text2text pairs")
            ids, labels = ids + context[len(ids):], labels + [IGNORE] * (len(context) - len(ids))
            answer = self.bare(message.content) + ([self.eos] if self.eos is not None else [])
            ids, labels = ids + answer, labels + answer
        return ids, labels


def collate(batch: Sequence[Tokenized], pad_id: int, make_tensor: Callable) -> dict[str, Any]:
    """Right-padded input ids, attention mask and labels (padding gets no loss)."""
    width = max(len(item.input_ids) for item in batch)
    ids = [item.input_ids + [pad_id] * (width - len(item.input_ids)) for item in batch]
    labels = [item.labels + [IGNORE] * (width - len(item.labels)) for item in batch]
    mask = [[1] * len(item.input_ids) + [0] * (width - len(item.input_ids)) for item in batch]
    return {"input_ids": make_tensor(ids), "attention_mask": make_tensor(mask), "labels": make_tensor(labels)}
