"""What every strategy is: validated options, an :class:`~taskfit.prompting.asking.Asker` in the chosen answer
format, ``prepare`` (work before the first example) and ``run(example)`` (a generator of request batches)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from taskfit.api import Example
from taskfit.prompting.asking import Asker
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.formats import make_format
from taskfit.prompting.options import BaseOptions
from taskfit.strict import validate


class Strategy:
    """A way of asking, composed from parts; subclasses set ``name``, ``Options`` and write ``run``."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseOptions]] = BaseOptions
    writes_first: ClassVar[bool] = False  # generates text before it answers, whatever the answer mode (reasoning)

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        self.ctx, self.task = context, context.task
        self.opts: Any = validate(self.Options, dict(options or {}), f"strategy_args of {self.name}")
        context.task.space.check_mode(context.mode)
        self.ask = Asker(context, make_format(context.task, self.opts))
        self.info: dict[str, Any] = {}  # strategy-level facts for results.json

    def generates(self) -> bool:
        """Whether this run sends generation requests (long, of uneven length: worth batching many together)."""
        return self.writes_first or self.ctx.mode == "generate"

    def prepare(self, examples: Sequence[Example], backend) -> None:
        """Work done once before the examples run (default: nothing)."""

    def run(self, example: Example) -> StrategyRun:  # pragma: no cover - interface
        raise NotImplementedError
