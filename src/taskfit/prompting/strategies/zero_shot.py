"""Zero-shot: the task's prompt alone."""

from __future__ import annotations

from taskfit.api import Example
from taskfit.prompting.context import StrategyRun
from taskfit.prompting.strategies.base import Strategy


class ZeroShot(Strategy):
    """The task's prompt alone, no demonstrations."""

    name = "zero_shot"

    def run(self, example: Example) -> StrategyRun:
        return (yield from self.ask.direct(example))
