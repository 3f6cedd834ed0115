"""Preference rows as token ids, rendered by the one renderer training, scoring and evaluation share
(:class:`taskfit.prompting.tokens.Tokenizer`: the hf backend's chat template, the answer, the end-of-turn token).

A prompt too long for ``max_length`` loses whole turns from the left (the oldest first, a system prompt always
kept, the last user turn always kept) before any trainer sees it; a row that still does not fit is dropped. Every
cut and every dropped row is counted, and the counts go into the run card.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from taskfit.api import Message, Prompt
from taskfit.data.preferences import PreferencePair, RatedRow
from taskfit.prompting.tokens import Pair, Tokenizer


@dataclass(frozen=True)
class PairIds:
    chosen: list[int]
    rejected: list[int]
    prompt_length: int  # tokens of the shared prompt at the start of both
    margin: float | None = None


@dataclass(frozen=True)
class RatedIds:
    ids: list[int]
    prompt_length: int
    label: bool


def without_oldest_turn(turns: Sequence[Message]) -> list[Message] | None:
    """``turns`` less the oldest turn (a user message with the assistant's reply), the system prompt and the last
    message always kept; ``None`` when nothing is left to remove."""
    turns = list(turns)
    removable = [i for i, m in enumerate(turns[:-1]) if m.role != "system"]
    if not removable:
        return None
    del turns[removable[0]]
    if removable[0] < len(turns) and turns[removable[0]].role == "assistant":
        del turns[removable[0]]
    return turns


@dataclass
class PreferenceTokenizer:
    tokenizer: Tokenizer
    max_length: int
    counts: Counter = field(default_factory=Counter)

    def sequence(self, prompt: Sequence[Message], answer: str) -> tuple[list[int], int]:
        """The ids of ``prompt`` + ``answer`` (+ end of turn) and how many of them are the prompt's."""
        tokenized = self.tokenizer(Pair(Prompt(tuple(prompt)), answer), max_length=10**9)
        prompt_length = sum(1 for label in tokenized.labels if label < 0)
        return tokenized.input_ids, prompt_length

    def fit(self, prompt: Sequence[Message], answers: Sequence[str]) -> list[tuple[list[int], int]] | None:
        """Each answer after ``prompt``, the prompt cut by whole turns from the left until every sequence fits
        (``None``: even the shortest prompt does not)."""
        turns = list(prompt)
        cut = False
        while True:
            encoded = [self.sequence(turns, answer) for answer in answers]
            if all(len(ids) <= self.max_length for ids, _ in encoded):
                if cut:
                    self.counts["prompts cut by whole turns"] += 1
                return encoded
            shorter = without_oldest_turn(turns)
            if shorter is None:
                self.counts["dropped: too long even with the last turn alone"] += 1
                return None
            turns, cut = shorter, True

    def pairs(self, pairs: Sequence[PreferencePair]) -> list[PairIds]:
        out = []
        for pair in pairs:
            fitted = self.fit(pair.prompt, [pair.chosen, pair.rejected])
            if fitted is not None:
                (chosen, prompt_length), (rejected, _) = fitted
                out.append(PairIds(chosen, rejected, prompt_length, pair.margin))
        self.counts["pairs kept"] += len(out)
        return out

    def rated(self, rows: Sequence[RatedRow]) -> list[RatedIds]:
        out = []
        for row in rows:
            fitted = self.fit(row.prompt, [row.completion])
            if fitted is not None:
                (ids, prompt_length), = fitted
                out.append(RatedIds(ids, prompt_length, row.label))
        self.counts["rated rows kept"] += len(out)
        return out
