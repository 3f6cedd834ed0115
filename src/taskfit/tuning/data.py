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

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskfit.api import Message, Prompt
from taskfit.errors import UserError
from taskfit.models.base import encode_pair
from taskfit.models.hf import encode_with, render_with
from taskfit.paths import read_utf8
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
    path = Path(path)
    if not path.is_file():
        raise UserError(f"training file not found: {path}")
    text = read_utf8(path)
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); "
                                f"each line must be one training row: {ROW_SHAPES}") from None
        return [_sample(item, where) for where, item in items]
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if isinstance(document, list):  # alpaca_data.json, ShareGPT dumps: a list of rows
        if not document:
            raise UserError(f"{path}: the list of training rows is empty")
        lines = _item_lines(text, text.index("[") + 1, len(document))
        return [_sample(item, f"{path}:{lines[i]} (item {i + 1})") for i, item in enumerate(document)]
    if not isinstance(document, dict) or "instances" not in document:
        raise UserError(f'{path}: expected {{"type": "text2text" or "conversation", "instances": [...]}}')
    kind = document.get("type")
    if kind not in ("text2text", "conversation"):
        raise UserError(f"{path}: type {kind!r} is not supported; use text2text or conversation")
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise UserError(f"{path}: 'instances' must be a non-empty list")
    lines = _item_lines(text, text.index("[", text.index('"instances"')) + 1, len(instances))
    return [_sample(item, f"{path}:{lines[i]} (instance {i + 1})", kind) for i, item in enumerate(instances)]


def _item_lines(text: str, start: int, count: int) -> list[int]:
    """Line where each item of the JSON list opening at ``start`` begins (for error messages)."""
    decoder = json.JSONDecoder()
    lines, pos = [], start
    for _ in range(count):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
    return lines + [lines[-1] if lines else 1] * (count - len(lines))


ROW_SHAPES = ('{"input", "output"}, {"messages": [...]}, alpaca {"instruction", "input", "output"}, ShareGPT '
              '{"conversations": [{"from", "value"}]} or TRL {"prompt", "completion"}')
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _sample(item: Any, where: str, kind: str | None = None) -> Sample:
    """One training row in whichever known format its keys say (see the module docstring)."""
    if not isinstance(item, dict):
        raise UserError(f"{where}: expected an object, got {type(item).__name__}")
    if "messages" in item and kind != "text2text":
        return _conversation(_messages(item["messages"], where, "messages"), where)
    if kind == "conversation":
        raise UserError(f"{where}: a conversation instance needs 'messages'")
    if "conversations" in item:  # ShareGPT
        turns = item["conversations"]
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: 'conversations' must be a non-empty list of {{from, value}}")
        messages = [Message("system", _text(item, "system", where))] if item.get("system") else []
        for turn in turns:
            who = turn.get("from") if isinstance(turn, dict) else None
            if who not in SHAREGPT_ROLES or not isinstance(turn.get("value"), str):
                raise UserError(f"{where}: each ShareGPT turn needs 'from' ({', '.join(SHAREGPT_ROLES)}) and a string "
                                f"'value', got {turn!r}")
            messages.append(Message(SHAREGPT_ROLES[who], turn["value"]))
        return _conversation(messages, where)
    if "instruction" in item:  # alpaca
        instruction, extra = _text(item, "instruction", where), item.get("input") or ""
        if not isinstance(extra, str):
            raise UserError(f"{where}: alpaca 'input' must be a string")
        system = (Message("system", _text(item, "system", where)),) if item.get("system") else ()
        user = instruction + (f"\n\n{extra}" if extra.strip() else "")
        return _pair(Prompt((*system, Message("user", user))), _text(item, "output", where), where)
    if "prompt" in item and "completion" in item:  # TRL prompt-completion, standard or conversational
        prompt, completion = item["prompt"], item["completion"]
        if isinstance(prompt, list) and isinstance(completion, list):
            return _conversation(_messages(prompt, where, "prompt") + _messages(completion, where, "completion"),
                                 where)
        return _pair(Prompt((Message("user", _text(item, "prompt", where)),)), _text(item, "completion", where),
                     where)
    if "input" in item or "output" in item:
        return _pair(Prompt((Message("user", _text(item, "input", where)),)), _text(item, "output", where), where)
    raise UserError(f"{where}: not a training row taskfit knows (keys {sorted(item)}); use one of {ROW_SHAPES}")


def _text(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where}: missing or non-string {key}")
    return value


def _pair(prompt: Prompt, answer: str, where: str) -> Pair:
    if not answer.strip():
        raise UserError(f"{where}: empty output (nothing to learn)")
    return Pair(prompt, answer)


def _messages(turns: Any, where: str, key: str) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: {key!r} must be a non-empty list of {{role, content}}")
    parsed = []
    for turn in turns:
        role, content = (turn.get("role"), turn.get("content")) if isinstance(turn, dict) else (None, None)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise UserError(f"{where}: each message needs role system/user/assistant and a string content, "
                            f"got {turn!r}")
        parsed.append(Message(role, content))
    return parsed


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
