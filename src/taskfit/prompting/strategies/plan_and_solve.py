"""Plan-and-solve (Wang et al. 2023): a plan, then carrying it out step by step, then the answer; ``n > 1`` samples
n plan-and-solution paths and votes, as self-consistency does for chain-of-thought."""

from __future__ import annotations

from typing import Any

from taskfit.api import Example, Message
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.options import PlanAndSolveOptions
from taskfit.prompting.reasoning import PlanThenSolve, reason_then_answer, sample_and_vote
from taskfit.prompting.strategies.base import Strategy


class PlanAndSolve(Strategy):
    name = "plan_and_solve"
    writes_first = True
    Options = PlanAndSolveOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.step = PlanThenSolve(self.opts)

    def run(self, example: Example) -> StrategyRun:
        messages = [*self.ask.system_messages(), Message("user", self.ask.user_text(example))]
        if self.opts.n > 1:
            return (yield from sample_and_vote(self.ask, self.step, messages, example, self.opts))
        return (yield from reason_then_answer(self.ask, self.step, messages, example))
