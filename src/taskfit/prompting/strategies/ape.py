"""APE: the instruction found by :mod:`~taskfit.prompting.instruction_search`, then zero-shot answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.api import Example
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.instruction_search import search_instruction
from taskfit.prompting.options import APEOptions
from taskfit.prompting.strategies.base import Strategy


class APE(Strategy):
    """Automatic Prompt Engineer (Zhou et al. 2022): search an instruction on the pool, answer zero-shot with it."""

    name = "ape"
    Options = APEOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.ask = self.ask.with_instruction(self.task.config.prompt.instruction)

    def prepare(self, examples: Sequence[Example], backend) -> None:
        instruction, self.info["ape"] = search_instruction(self.ask, self.opts, backend)
        self.ask = self.ask.with_instruction(instruction)

    def run(self, example: Example) -> StrategyRun:
        outcome = yield from self.ask.direct(example)
        outcome.extra["instruction"] = self.ask.instruction
        return outcome
