"""Token ids of prompts and answers exactly as the hf backend renders them (chat template or plain text, the
answer, the end-of-turn token), with labels that mark what is learned. Supervised tuning, the reward model's
training and scoring, and the alignment stages all tokenize through :class:`Tokenizer`, so a prompt cannot look
different to a trainer than to the evaluation that measures it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from taskfit.api import Message, Prompt
from taskfit.errors import UserError
from taskfit.models.base import encode_pair
from taskfit.models.hf import encode_with, render_with

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


@dataclass(frozen=True)
class Text:
    """Plain text learned whole (a language-modelling loss on every token; mixed in to limit forgetting)."""

    text: str


Sample = Pair | Conversation | Text


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
        if isinstance(sample, Text):
            ids = self.bare(sample.text) + ([self.eos] if self.eos is not None else [])
            ids = ids[:max_length]  # plain text keeps its beginning
            return Tokenized(ids, list(ids))
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

