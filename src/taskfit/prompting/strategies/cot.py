"""Chain-of-thought (Wei et al. 2022; zero-shot: Kojima et al. 2022): reason, then answer after the trigger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.api import Example, Message
from taskfit.errors import UserError
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.demos import Demos
from taskfit.prompting.options import CoTOptions
from taskfit.prompting.reasoning import StepByStep, reason_then_answer
from taskfit.prompting.strategies.base import Strategy


class ChainOfThought(Strategy):
    """Reason first ("Let's think step by step"), then answer after "Therefore, the answer is".

    With ``k > 0`` the demonstrations carry rationales: the task's ``rationale`` field of the pool rows.
    """

    name = "cot"
    writes_first = True
    Options = CoTOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.demos = Demos(context, self.opts, self.name)
        self.step = StepByStep(self.opts)

    def prepare(self, examples: Sequence[Example], backend) -> None:
        if self.opts.k > 0:
            if not any(ex.rationale for ex in self.ctx.pool or []):
                raise UserError(f"few-shot {self.name} needs rationales: set 'rationale:' (a data column) in task "
                                f"{self.task.name!r} or write 'demos:' with rationales and use --pool-split demos; "
                                f"or use k=0 for zero-shot {self.name}")
            self.demos.prepare(examples)

    def messages(self, example: Example) -> tuple[list[Message], list[Example]]:
        demos = self.demos.select(example)
        return self.demos.messages(self.ask.system_messages(), example, demos, self.ask.user_text,
                                   lambda d: self.step.demo_answer(d, self.ask.fmt.gold(d), self.name)), demos

    def run(self, example: Example) -> StrategyRun:
        messages, demos = self.messages(example)
        outcome = yield from reason_then_answer(self.ask, self.step, messages, example)
        return self.demos.record(outcome, demos)
