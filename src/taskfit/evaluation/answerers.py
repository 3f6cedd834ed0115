"""Answerers: what evaluation drives. Anything that turns examples into :class:`~taskfit.api.Outcome` s is one —
a prompting strategy on a language model, or a trained predictor such as the specialist head — so chunks, resume,
timings and results are written once, in :mod:`taskfit.evaluation.run`, for every way of answering a task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from taskfit.api import Example, Outcome
from taskfit.models.base import Backend
from taskfit.prompting.driver import drive
from taskfit.prompting.fitting import fit_examples
from taskfit.prompting.strategies import Strategy

SCORING_CHUNK = 32  # examples answered (and saved) together: at least this, 4 batches otherwise
GENERATION_CHUNK_SLOTS = 2  # a generating run on a backend that decodes N requests at once (the hf decoder's slots,
# refilled only from requests of the same call) takes 2 N examples per chunk, so the slots stay full

if TYPE_CHECKING:  # imported with torch, only when a head is evaluated (models.registry.load_head)
    from taskfit.models.head import HeadPredictor


class Answerer(Protocol):
    """Answers examples; says what it is (results.json ``model``), what it found (``strategy_info``) and counted."""

    name: str
    info: dict[str, Any]
    pool: dict[str, Any] | None  # the demonstration pool it read (split, rows), None: none (results.json ``pool``)

    def prepare(self, examples: Sequence[Example]) -> list[Example]:
        """Work before the first example; returns the examples as they will be asked (long inputs shortened)."""
        ...

    def answer(self, examples: Sequence[Example]) -> list[Outcome]: ...

    def chunk_size(self, batch_size: int) -> int:
        """Examples per :meth:`answer` call: each call's records are saved before the next starts."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...


class StrategyAnswerer:
    """A prompting strategy on a backend: every example's request generator driven side by side, in batches."""

    def __init__(self, strategy: Strategy, backend: Backend, pool: dict[str, Any] | None = None):
        self.strategy, self.backend, self.pool = strategy, backend, pool
        self.name = strategy.name

    @property
    def info(self) -> dict[str, Any]:
        return self.strategy.info

    def prepare(self, examples: Sequence[Example]) -> list[Example]:
        """Shorten rows (and demonstrations) too long for the model's window, then the strategy's own preparation."""
        ctx = self.strategy.ctx
        answer = ctx.max_tokens or ctx.task.config.generation.max_tokens
        reserve = answer + getattr(self.strategy.opts, "max_reasoning_tokens", 0) + 32
        if ctx.pool:
            ctx.pool = fit_examples(ctx.pool, ctx.task, ctx.mode, self.backend, reserve)
        fitted = fit_examples(examples, ctx.task, ctx.mode, self.backend, reserve)
        self.strategy.prepare(fitted, self.backend)
        return fitted

    def answer(self, examples: Sequence[Example]) -> list[Outcome]:
        return drive([self.strategy.run(ex) for ex in examples], self.backend)

    def chunk_size(self, batch_size: int) -> int:
        slots = getattr(self.backend, "generate_parallelism", 0) if self.strategy.generates() else 0
        return max(4 * batch_size, SCORING_CHUNK, GENERATION_CHUNK_SLOTS * slots)

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()

    def stats(self) -> dict[str, Any]:
        return dict(getattr(self.backend, "stats", {}))


class HeadAnswerer:
    """A trained encoder + head: one forward pass per batch of examples, no prompt. The ``prompt`` recorded is what
    the encoder read (the example's fields, joined by ``||``)."""

    name = "head"
    pool = None

    def __init__(self, predictor: HeadPredictor, batch_size: int, progress: bool):
        self.predictor, self.batch_size, self.progress = predictor, batch_size, progress
        self.info = {"head": predictor.config}

    def prepare(self, examples: Sequence[Example]) -> list[Example]:
        """Nothing to prepare: the head was trained beforehand (its encoder cuts long inputs itself)."""
        return list(examples)

    def answer(self, examples: Sequence[Example]) -> list[Outcome]:
        texts = self.predictor.texts(examples)
        answers = self.predictor.predict(texts, batch_size=self.batch_size, progress=self.progress)
        return [Outcome(prediction, True, " || ".join(text), extra.get("probs", prediction), extra)
                for text, (prediction, extra) in zip(texts, answers)]

    def chunk_size(self, batch_size: int) -> int:
        return max(4 * batch_size, SCORING_CHUNK)

    def describe(self) -> dict[str, Any]:
        return self.predictor.describe()

    def stats(self) -> dict[str, Any]:
        return {}
