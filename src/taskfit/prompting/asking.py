"""Asking the model for an answer: the prompt pieces of the run's answer format and the two answer modes.

An :class:`Asker` is what every strategy composes with: it writes the user turn (:mod:`prompts`, in the answer
format) and answers after given messages and an assistant prefix — by log-likelihood over the candidate answers
or by generation and parsing. Strategies differ only in the messages and prefix they build.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.api import Example, GenerateRequest, LoglikelihoodRequest, Message, Outcome, Prompt
from taskfit.prompting import prompts
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.formats import TextFormat


class Asker:
    """The run's context and answer format; ``instruction`` replaces the task's (APE, CARP)."""

    def __init__(self, context: StrategyContext, fmt: TextFormat, instruction: str | None = None):
        self.ctx, self.fmt, self.instruction = context, fmt, instruction
        self.task, self.space = context.task, context.task.space

    def with_instruction(self, instruction: str | None) -> Asker:
        return Asker(self.ctx, self.fmt, instruction)

    def system_messages(self) -> list[Message]:
        return prompts.system_messages(self.task)

    def user_text(self, example: Example, instruction: str | None = None) -> str:
        """The task's user turn (:func:`~taskfit.prompting.prompts.user_text`) in the answer format."""
        chosen = instruction if instruction is not None else self.instruction
        return prompts.user_text(self.task, example, self.ctx.mode, self.fmt.scored_texts(self.ctx.mode),
                                 self.fmt.output_format(), chosen)

    def answer_prefix(self) -> str:
        return self.fmt.answer_prefix()

    def direct(self, example: Example) -> StrategyRun:
        """The task's prompt alone: system, user turn, answer."""
        messages = [*self.system_messages(), Message("user", self.user_text(example))]
        return (yield from self.answer(messages, self.answer_prefix(), example))

    def answer(self, messages: Sequence[Message], prefix: str, example: Example) -> StrategyRun:
        """Answer ``example`` after ``messages`` and the assistant text ``prefix``, in the run's mode."""
        if self.ctx.mode == "loglikelihood":
            return (yield from self.by_loglikelihood(messages, prefix, example))
        return (yield from self.by_generation(messages, prefix, example))

    def by_loglikelihood(self, messages: Sequence[Message], prefix: str, example: Example) -> StrategyRun:
        """Score every candidate answer after the prefix; the task type turns the scores into a prediction."""
        words = self.fmt.candidates(example)
        if not words:  # e.g. KBQA retrieval found no fact with an answer
            return Outcome(None, False, self.ctx.render(Prompt(tuple(messages), prefix)), {},
                           {"parse_error": "no candidate answers to score"})
        prompt, continuations = self.fmt.scoring(messages, prefix, words, example)
        results = yield [LoglikelihoodRequest(prompt, c) for c in continuations]
        logprobs = [r.logprob for r in results]
        prediction, extra = self.space.from_scores(example, words, logprobs)
        response = extra.pop("scores", None) or dict(zip(words, logprobs))
        return Outcome(prediction, True, self.ctx.render(prompt), response, extra)

    def by_generation(self, messages: Sequence[Message], prefix: str, example: Example,
                      temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> StrategyRun:
        """Generate the answer and read it with the format's parser."""
        plan = self.fmt.generation(messages, prefix, example, self.ctx.json_schema)
        request = GenerateRequest(plan.prompt, plan.stop, self.fmt.budget(self.ctx.max_tokens), temperature, top_p,
                                  self.ctx.seed if seed is None else seed, plan.schema)
        (result,) = yield [request]
        extra: dict[str, Any] = {"generated_tokens": result.n_tokens, "finish_reason": result.finish_reason,
                                 "logprob": result.logprob}
        text = plan.opener + result.text + plan.closer if plan.opener else result.text
        prediction, error = self.fmt.parse(text, example)
        if error:
            extra["parse_error"] = error
        return Outcome(prediction, prediction is not None, self.ctx.render(plan.prompt), result.text, extra)
