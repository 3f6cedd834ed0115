"""Demonstrations as a part: where they come from (a selector over the pool) and how they are laid out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from taskfit.api import Example, Message
from taskfit.errors import UserError
from taskfit.prompting.context import StrategyContext
from taskfit.prompting.options import DemoOptions
from taskfit.prompting.selectors import Selector, make_selector


class Demos:
    """k pool examples per test example (random, fixed or kNN), as chat turns or inside one prompt."""

    def __init__(self, context: StrategyContext, options: DemoOptions, strategy: str):
        self.ctx, self.opts, self.strategy = context, options, strategy
        self.selector: Selector | None = None
        if options.calibrate and context.task.space.type != "classification":
            raise UserError(f"calibrate=true adjusts label probabilities: it needs a classification task, "
                            f"not {context.task.space.type}")

    def prepare(self, examples: Sequence[Example]) -> None:
        """Build the selector (none for k = 0) and let it precompute (kNN embeds the examples in one batch)."""
        if self.opts.k == 0:
            return
        pool = self.ctx.pool or []
        if self.opts.pool_limit:
            pool = pool[: self.opts.pool_limit]
        if not pool:
            raise UserError(f"strategy {self.strategy} needs demonstrations but the pool split is empty")
        field = self.opts.knn_field or next(iter(self.ctx.task.config.fields))
        self.selector = make_selector(self.opts.selector, pool, self.opts.k, self.ctx.seed, self.opts.order,
                                      self.opts.indices, field, self.opts.encoder)
        self.selector.prepare(examples)

    def select(self, example: Example) -> list[Example]:
        return self.selector.select(example) if self.selector else []

    def messages(self, system: list[Message], example: Example, demos: Sequence[Example],
                 user: Callable[[Example], str], answer: Callable[[Example], str]) -> list[Message]:
        """System, then the demos (user/assistant pairs, or one block under the headers), then the query's turn."""
        if not demos:
            return [*system, Message("user", user(example))]
        if self.opts.demo_style == "multi_turn":
            turns = [m for demo in demos for m in (Message("user", user(demo)), Message("assistant", answer(demo)))]
            return [*system, *turns, Message("user", user(example))]
        blocks = [f"{user(d)}\n{answer(d)}" for d in demos]
        text = "\n\n".join([self.opts.demos_header, *blocks, self.opts.query_header, user(example)])
        return [*system, Message("user", text)]
