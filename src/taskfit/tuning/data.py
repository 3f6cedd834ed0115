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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taskfit.api import Message, Prompt
from taskfit.data.records import alpaca_prompt, messages, read_rows, sharegpt, text
from taskfit.errors import UserError
from taskfit.prompting.prompts import gold_continuation, task_prompt
from taskfit.prompting.tokens import IGNORE, Conversation, Pair, Sample, Tokenized, Tokenizer, collate

__all__ = ["IGNORE", "Conversation", "Pair", "Sample", "Tokenized", "Tokenizer", "collate", "pairs_from_task",
           "read_training_file"]

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
