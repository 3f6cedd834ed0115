"""Strategies: how to ask a model about one example, as a generator of request batches.

A strategy's :meth:`Strategy.run` yields a list of requests, receives their results, may yield again
(chain-of-thought asks twice), and finally returns an :class:`Outcome`. The evaluator drives many
examples' generators side by side and sends all their pending requests of one type to the backend as
one batch, so multi-step strategies batch as well as single-step ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from taskfit.models.base import GenerateRequest, LoglikelihoodRequest, Request
from taskfit.prompting.parsers import PARSERS
from taskfit.prompting.prompt import Prompt, PromptParts, continuation_for
from taskfit.tasks.task import Example, Task

StrategyRun = Generator[list[Request], list[Any], "Outcome"]


@dataclass
class Outcome:
    """What a strategy concluded for one example, with everything needed to audit it."""

    prediction: str | None
    parse_ok: bool
    prompt: str
    response: Any
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StrategyContext:
    """Run settings a strategy needs besides the example."""

    task: Task
    mode: str
    render: Callable[[Prompt], str]
    seed: int = 0
    max_tokens: int | None = None


class Strategy:
    """Base class; subclasses register in :data:`STRATEGIES` under ``name``."""

    name: ClassVar[str]

    def __init__(self, context: StrategyContext):
        self.ctx = context
        self.task = context.task

    def run(self, example: Example) -> StrategyRun:  # pragma: no cover - interface
        raise NotImplementedError

    def prompt_for(self, example: Example) -> Prompt:
        """The task's own prompt for ``example``: instruction, rendered input, output format, prefix."""
        spec = self.task.config.prompt
        return PromptParts(
            instruction=spec.instruction,
            input_text=spec.input_template.format(**example.fields),
            output_format=spec.output_format,
            system=spec.system,
            answer_prefix=spec.answer_prefix,
        ).build()

    # -- the two answer modes, shared by strategies that end in one direct answer
    def answer_by_loglikelihood(self, prompt: Prompt) -> StrategyRun:
        """Score every label verbalizer after ``prompt``; the most likely label wins (ties: first label)."""
        labels = self.task.config.labels
        results = yield [LoglikelihoodRequest(prompt, continuation_for(prompt, label.word)) for label in labels]
        scores = {label.value: r.logprob for label, r in zip(labels, results)}
        prediction = max(scores, key=lambda value: scores[value])  # max keeps the first of equal scores
        top = max(scores.values())
        norm = math.log(sum(math.exp(s - top) for s in scores.values())) + top
        return Outcome(
            prediction=prediction,
            parse_ok=True,
            prompt=self.ctx.render(prompt),
            response=scores,
            extra={"probs": {k: math.exp(v - norm) for k, v in scores.items()}},
        )

    def answer_by_generation(self, prompt: Prompt) -> StrategyRun:
        """Generate free text greedily and parse it into a label; no label found is a parse failure."""
        gen = self.task.config.generation
        request = GenerateRequest(
            prompt=prompt,
            stop=tuple(gen.stop),
            max_tokens=self.ctx.max_tokens or gen.max_tokens,
            temperature=0.0,
            seed=self.ctx.seed,
        )
        (result,) = yield [request]
        prediction = PARSERS[self.task.config.parser](result.text, self.task.config.labels)
        return Outcome(
            prediction=prediction,
            parse_ok=prediction is not None,
            prompt=self.ctx.render(prompt),
            response=result.text,
            extra={"generated_tokens": result.n_tokens, "finish_reason": result.finish_reason},
        )

    def answer(self, prompt: Prompt) -> StrategyRun:
        """Answer ``prompt`` in the run's mode."""
        if self.ctx.mode == "loglikelihood":
            return (yield from self.answer_by_loglikelihood(prompt))
        return (yield from self.answer_by_generation(prompt))


class ZeroShot(Strategy):
    """The task's prompt alone, no demonstrations."""

    name = "zero_shot"

    def run(self, example: Example) -> StrategyRun:
        return (yield from self.answer(self.prompt_for(example)))


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (ZeroShot,)}


def make_strategy(name: str, context: StrategyContext) -> Strategy:
    """Instantiate strategy ``name`` (validated earlier by the run config)."""
    return STRATEGIES[name](context)


def drive(strategy: Strategy, examples: Sequence[Example], backend) -> list[Outcome]:
    """Run ``strategy`` on ``examples``, batching every round of requests across examples by type."""
    runs = {ex.index: strategy.run(ex) for ex in examples}
    replies: dict[int, list[Any] | None] = {index: None for index in runs}
    outcomes: dict[int, Outcome] = {}
    while runs:
        asked: dict[int, list[Request]] = {}
        for index, gen in list(runs.items()):
            try:
                asked[index] = gen.send(replies[index])
            except StopIteration as done:
                outcomes[index] = done.value
                del runs[index]
        if not asked:
            break
        for index, results in _answer_all(asked, backend).items():
            replies[index] = results
    return [outcomes[ex.index] for ex in examples]


def _answer_all(asked: dict[int, list[Request]], backend) -> dict[int, list[Any]]:
    """Send all log-likelihood requests in one call and all generation requests in another."""
    answers: dict[int, list[Any]] = {index: [None] * len(reqs) for index, reqs in asked.items()}
    for kind, method in ((LoglikelihoodRequest, backend.loglikelihood), (GenerateRequest, backend.generate)):
        slots = [(index, pos) for index, reqs in asked.items() for pos, req in enumerate(reqs) if isinstance(req, kind)]
        if not slots:
            continue
        results = method([asked[index][pos] for index, pos in slots])
        for (index, pos), result in zip(slots, results):
            answers[index][pos] = result
    return answers
