"""Self-consistency (Wang et al. 2023): n sampled chain-of-thought paths, then a vote."""

from __future__ import annotations

from taskfit.api import Example
from taskfit.prompting.context import StrategyRun
from taskfit.prompting.options import SelfConsistencyOptions
from taskfit.prompting.reasoning import sample_and_vote
from taskfit.prompting.strategies.cot import ChainOfThought


class SelfConsistency(ChainOfThought):
    """Chain-of-thought's prompt and step, n seeded paths (``reasoning: false``: sampled answers) and a vote."""

    name = "self_consistency"
    Options = SelfConsistencyOptions

    def run(self, example: Example) -> StrategyRun:
        messages, demos = self.messages(example)
        step = self.step if self.opts.reasoning else None
        outcome = yield from sample_and_vote(self.ask, step, messages, example, self.opts)
        return self.demos.record(outcome, demos)
