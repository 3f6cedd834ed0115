"""Few-shot: k demonstrations before the query; optional contextual calibration of the label scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from taskfit.api import Example, Message
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.demos import Demos
from taskfit.prompting.driver import together
from taskfit.prompting.options import DemoOptions
from taskfit.prompting.strategies.base import Strategy


class FewShot(Strategy):
    """k demonstrations from the pool (random, fixed or kNN), as chat turns or inside one prompt."""

    name = "few_shot"
    Options = DemoOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.demos = Demos(context, self.opts, self.name)

    def prepare(self, examples: Sequence[Example], backend) -> None:
        self.demos.prepare(examples)

    def messages(self, example: Example, demos: Sequence[Example]) -> list[Message]:
        return self.demos.messages(self.ask.system_messages(), example, demos, self.ask.user_text,
                                   self.ask.fmt.demo_answer)

    def run(self, example: Example) -> StrategyRun:
        demos = self.demos.select(example)
        messages = self.messages(example, demos)
        if self.opts.calibrate and self.ctx.mode == "loglikelihood":
            outcome = yield from self.calibrated(example, demos, messages)
        else:
            outcome = yield from self.ask.answer(messages, self.ask.answer_prefix(), example)
        return self.demos.record(outcome, demos)

    def calibrated(self, example: Example, demos: Sequence[Example], messages: list[Message]) -> StrategyRun:
        """Contextual calibration (Zhao et al. 2021): divide each label's probability by its probability for
        a content-free input ("N/A") under the same demos, which removes the label bias demos induce."""
        content_free = Example(index=example.index, fields={k: "N/A" for k in example.fields}, gold=example.gold,
                               meta=example.meta)
        prefix = self.ask.answer_prefix()
        real, free = yield from together([
            self.ask.by_loglikelihood(messages, prefix, example),
            self.ask.by_loglikelihood(self.messages(content_free, demos), prefix, content_free),
        ])
        adjusted = {k: math.log(real.extra["probs"][k]) - math.log(free.extra["probs"][k]) for k in real.response}
        real.prediction = max(adjusted, key=lambda k: adjusted[k])
        real.extra["content_free_probs"] = free.extra["probs"]
        real.extra["calibrated_scores"] = adjusted
        real.extra["logprob"] = real.response[real.prediction]
        return real
