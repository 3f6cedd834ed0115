"""Reasoning as a part: a step the model writes before it answers, and n sampled paths with a vote.

Three steps exist: :class:`StepByStep` (chain-of-thought: "Let's think step by step", then "Therefore, the answer
is"), :class:`CluesThenDecision` (CARP: clues and reasoning, then the decision) and :class:`PlanThenSolve`
(plan-and-solve: a plan, then carrying it out, then the answer — two generations). A step's ``reason`` is a
generator of requests that returns the reasoning as one :class:`GenerateResult`; its requests are marked
``continued`` (the answer's prompt continues their text, so a backend may keep their KV).
:func:`reason_then_answer` is one greedy path; :func:`sample_and_vote` runs n seeded paths (each with or without a
step) and votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from taskfit.api import Example, GenerateRequest, GenerateResult, Message, Outcome, Prompt
from taskfit.errors import UserError
from taskfit.prompting.asking import Asker
from taskfit.prompting.context import StrategyRun, derive_seed
from taskfit.prompting.driver import together
from taskfit.prompting.options import CARPOptions, CoTOptions, PlanAndSolveOptions, SamplingOptions


class ReasoningStep(Protocol):
    def reason(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> StrategyRun:
        """Requests for the reasoning; returns it as one result (text, tokens, log-probability)."""

    def answer_prefix(self, reasoning: str) -> str:
        """The assistant text the answer follows: the step's opening, the reasoning and the answer trigger."""


class OneRequestStep:
    """A step whose reasoning is one generation (``request``)."""

    def request(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> GenerateRequest:
        raise NotImplementedError

    def reason(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> StrategyRun:
        (result,) = yield [self.request(messages, temperature, seed)]
        return result


class StepByStep(OneRequestStep):
    """Chain-of-thought's step; few-shot demos carry the pool rows' rationales."""

    def __init__(self, options: CoTOptions):
        self.opts = options

    def request(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> GenerateRequest:
        stop = tuple(s for s in (self.opts.answer_trigger, "\n\n\n") if s)
        return GenerateRequest(Prompt(tuple(messages), self.opts.reasoning_trigger), stop,
                               self.opts.max_reasoning_tokens, temperature, self.opts.top_p, seed, continued=True)

    def answer_prefix(self, reasoning: str) -> str:
        return f"{self.opts.reasoning_trigger} {reasoning.strip()}\n{self.opts.answer_trigger}"

    def demo_answer(self, demo: Example, final: str, strategy: str) -> str:
        """A demo's assistant turn: its rationale under the triggers, then its answer."""
        if not demo.rationale:
            raise UserError(f"pool example {demo.index + 1} has an empty rationale; few-shot {strategy} needs one")
        return f"{self.opts.reasoning_trigger} {demo.rationale.strip()}\n{self.opts.answer_trigger} {final}"


class CluesThenDecision(OneRequestStep):
    """CARP's step (Sun et al. 2023): clues and reasoning, stopped at the decision prefix."""

    def __init__(self, options: CARPOptions):
        self.opts = options

    def request(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> GenerateRequest:
        return GenerateRequest(Prompt(tuple(messages), self.opts.clues_prefix), (self.opts.decision_prefix,),
                               self.opts.max_reasoning_tokens, temperature, self.opts.top_p, seed, continued=True)

    def answer_prefix(self, reasoning: str) -> str:
        return f"{self.opts.clues_prefix} {reasoning.strip()}\n{self.opts.decision_prefix}"


class PlanThenSolve:
    """Plan-and-solve (Wang et al. 2023): the model writes a plan, then carries it out step by step (a second
    generation that continues the plan), then answers after the answer trigger."""

    def __init__(self, options: PlanAndSolveOptions):
        self.opts = options

    def reason(self, messages: Sequence[Message], temperature: float = 0.0, seed: int = 0) -> StrategyRun:
        o = self.opts
        stops = tuple(s for s in (o.solve_trigger, o.answer_trigger, "\n\n\n") if s)
        (plan,) = yield [GenerateRequest(Prompt(tuple(messages), o.plan_trigger), stops, o.max_plan_tokens,
                                         temperature, o.top_p, seed, continued=True)]
        opened = f"{o.plan_trigger} {plan.text.strip()}\n{o.solve_trigger}"
        (solved,) = yield [GenerateRequest(Prompt(tuple(messages), opened), (o.answer_trigger, "\n\n\n"),
                                           o.max_reasoning_tokens, temperature, o.top_p, derive_seed(seed, 1),
                                           continued=True)]
        logprob = None if plan.logprob is None or solved.logprob is None else plan.logprob + solved.logprob
        return GenerateResult(text=f"{plan.text.strip()}\n{o.solve_trigger} {solved.text.strip()}",
                              n_tokens=plan.n_tokens + solved.n_tokens, finish_reason=solved.finish_reason,
                              logprob=logprob)

    def answer_prefix(self, reasoning: str) -> str:
        return f"{self.opts.plan_trigger} {reasoning.strip()}\n{self.opts.answer_trigger}"


def reason_then_answer(ask: Asker, step: ReasoningStep, messages: list[Message], example: Example) -> StrategyRun:
    """One greedy path: the reasoning, then the answer after it (rationale and its tokens in ``extra``)."""
    reasoning = yield from step.reason(messages)
    outcome = yield from ask.answer(messages, step.answer_prefix(reasoning.text), example)
    outcome.extra.update(rationale=reasoning.text.strip(), reasoning_tokens=reasoning.n_tokens)
    return outcome


def sample_and_vote(ask: Asker, step: ReasoningStep | None, messages: list[Message], example: Example,
                    sampling: SamplingOptions) -> StrategyRun:
    """n paths, each seeded by (run seed, example, path) so a path's text does not depend on its batch: sampled
    reasoning answered greedily, or (no step) sampled answers; then a majority or log-probability-weighted vote."""
    seeds = [derive_seed(ask.ctx.seed, example.index, path) for path in range(sampling.n)]
    if step is not None:
        paths = yield from together([step.reason(messages, sampling.temperature, s) for s in seeds])
        outcomes = yield from together([ask.answer(messages, step.answer_prefix(p.text), example) for p in paths])
        path_logprobs = [p.logprob + (o.extra.get("logprob") or 0.0) if p.logprob is not None else None
                         for p, o in zip(paths, outcomes)]
        rationales = [p.text.strip() for p in paths]
    else:
        if ask.ctx.mode != "generate":
            raise UserError("self_consistency with reasoning=false samples answers: use --mode generate")
        outcomes = yield from together([ask.by_generation(messages, ask.answer_prefix(), example,
                                                          sampling.temperature, sampling.top_p, s) for s in seeds])
        path_logprobs = [o.extra.get("logprob") for o in outcomes]
        rationales = []
    result = ask.space.combine([o.prediction for o in outcomes], path_logprobs, sampling.vote)
    return Outcome(
        prediction=result.winner,
        parse_ok=result.winner is not None,
        prompt=outcomes[0].prompt,
        response=[o.response for o in outcomes],
        extra={"votes": result.distribution, "path_answers": [o.prediction for o in outcomes],
               "path_logprobs": path_logprobs, "rationales": rationales, "seeds": seeds},
    )
