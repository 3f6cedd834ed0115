"""Demonstrations as a part: where they come from (a selector over the pool), what they show, how they are laid out.

What they show can be taken apart as Min et al. (2022, "Rethinking the Role of Demonstrations") did:
``demo_labels`` replaces the gold answers (random labels from the label set, flipped labels, or none: inputs only)
and ``demo_inputs`` replaces the inputs with out-of-domain text of similar length (another task's pool rows or a
file), keeping this task's labels. Every draw is seeded by (run seed, test example, demo), so a run is repeatable
and the same example sees the same demos on any backend; each example's samples.jsonl row records what it was shown.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from taskfit.api import Example, Message, Outcome
from taskfit.errors import UserError
from taskfit.prompting.context import StrategyContext, derive_seed
from taskfit.prompting.options import DemoOptions
from taskfit.prompting.selectors import Selector, make_selector
from taskfit.tasks.task import list_tasks, load_task

OOD_WINDOW = 16
"""Out-of-domain inputs are drawn (seeded) among the this many whose length is nearest the replaced input's."""


class Demos:
    """k pool examples per test example (random, fixed or kNN), as chat turns or inside one prompt."""

    def __init__(self, context: StrategyContext, options: DemoOptions, strategy: str):
        self.ctx, self.opts, self.strategy = context, options, strategy
        self.selector: Selector | None = None
        self.outside: OutsideInputs | None = None
        space = context.task.space
        if options.calibrate and space.type != "classification":
            raise UserError(f"calibrate=true adjusts label probabilities: it needs a classification task, "
                            f"not {space.type}")
        if options.demo_labels in ("random", "flipped") and space.type != "classification":
            raise UserError(f"demo_labels={options.demo_labels} draws from a label set: it needs a classification "
                            f"task, not {space.type} (demo_labels=none shows inputs only on any task)")
        if options.demo_labels == "flipped" and len(space.config.labels) < 2:
            raise UserError("demo_labels=flipped needs at least two labels")

    @property
    def ablated(self) -> bool:
        return self.opts.demo_labels != "gold" or self.opts.demo_inputs != "task"

    def prepare(self, examples: Sequence[Example]) -> None:
        """Build the selector (none for k = 0) and let it precompute (kNN embeds the examples in one batch)."""
        if self.opts.k == 0:
            return
        pool = self.ctx.pool or []
        if self.opts.pool_limit:
            pool = pool[: self.opts.pool_limit]
        if not pool:
            raise UserError(f"strategy {self.strategy} needs demonstrations but the pool split is empty")
        field = self.opts.knn_field or self.main_field
        self.selector = make_selector(self.opts.selector, pool, self.opts.k, self.ctx.seed, self.opts.order,
                                      self.opts.indices, field, self.opts.encoder)
        self.selector.prepare(examples)
        if self.opts.demo_inputs != "task":
            self.outside = OutsideInputs.load(self.opts.demo_inputs, self.ctx)

    @property
    def main_field(self) -> str:
        return next(iter(self.ctx.task.config.fields))

    def select(self, example: Example) -> list[Example]:
        """The demos ``example`` is shown: selected from the pool, then with their labels and inputs replaced as
        ``demo_labels`` and ``demo_inputs`` say (same indices, so the record still names the pool rows)."""
        demos = self.selector.select(example) if self.selector else []
        return [self._shown(example, d) for d in demos] if self.ablated else demos

    def _shown(self, example: Example, demo: Example) -> Example:
        rng = np.random.default_rng(derive_seed(self.ctx.seed, example.index, demo.index, 7))
        gold, fields, meta = demo.gold, dict(demo.fields), dict(demo.meta)
        values = [label.value for label in self.ctx.task.config.labels]
        if self.opts.demo_labels == "random":
            gold = values[int(rng.integers(len(values)))]
        elif self.opts.demo_labels == "flipped":
            others = [v for v in values if v != demo.gold]
            gold = others[int(rng.integers(len(others)))]
        if self.outside is not None:
            field = self.main_field
            row, fields[field] = self.outside.like(fields[field], rng)
            meta["outside_row"] = row
        return replace(demo, gold=gold, fields=fields, meta=meta)

    def record(self, outcome: Outcome, demos: Sequence[Example]) -> Outcome:
        """Write what the example was shown into its samples.jsonl row: pool rows, and the ablation's labels and
        out-of-domain rows when the demos were taken apart."""
        outcome.extra["demos"] = [d.index for d in demos]
        if self.ablated:
            outcome.extra["demo_labels"] = (None if self.opts.demo_labels == "none" else [d.gold for d in demos])
            if self.outside is not None:
                outcome.extra["demo_inputs"] = {"source": self.outside.source,
                                                "rows": [d.meta["outside_row"] for d in demos]}
        return outcome

    def messages(self, system: list[Message], example: Example, demos: Sequence[Example],
                 user: Callable[[Example], str], answer: Callable[[Example], str]) -> list[Message]:
        """System, then the demos (user/assistant pairs, or one block under the headers), then the query's turn.

        With ``demo_labels=none`` the demos are inputs only, always in one prompt: a chat turn without its answer
        would not be a demonstration."""
        if not demos:
            return [*system, Message("user", user(example))]
        if self.opts.demo_labels == "none":
            blocks = [user(d) for d in demos]
        elif self.opts.demo_style == "multi_turn":
            turns = [m for demo in demos for m in (Message("user", user(demo)), Message("assistant", answer(demo)))]
            return [*system, *turns, Message("user", user(example))]
        else:
            blocks = [f"{user(d)}\n{answer(d)}" for d in demos]
        text = "\n\n".join([self.opts.demos_header, *blocks, self.opts.query_header, user(example)])
        return [*system, Message("user", text)]


class OutsideInputs:
    """Out-of-domain demo inputs: texts sorted by length, drawn near the length of the input they replace."""

    def __init__(self, source: str, texts: Sequence[str]):
        kept = sorted((len(t), t, i) for i, t in enumerate(texts) if t.strip())
        if len(kept) < OOD_WINDOW:
            raise UserError(f"demo_inputs={source}: {len(kept)} non-empty inputs; at least {OOD_WINDOW} are needed")
        self.source = source
        self.lengths = [n for n, _, _ in kept]
        self.items = [(i, t) for _, t, i in kept]

    @classmethod
    def load(cls, spec: str, context: StrategyContext) -> OutsideInputs:
        """Inputs from another task (a name or a task YAML: its pool split's first input field), a text file (one
        per line) or a .jsonl file (its 'text', else its first text value)."""
        path = Path(spec)
        if spec in list_tasks() or spec.endswith((".yaml", ".yml")):
            other = load_task(spec)
            if other.name == context.task.name:
                raise UserError(f"demo_inputs={spec} is this task; use demo_inputs=task for the pool's own inputs")
            field = next(iter(other.config.fields))
            rows = other.examples(other.config.pool_split, context.data_dir)
            return cls(other.name, [ex.fields[field] for ex in rows])
        if path.is_file():
            return cls(str(path), _file_texts(path))
        raise UserError(f"demo_inputs={spec!r} is neither a task ({', '.join(sorted(list_tasks()))}) nor a file; "
                        "give a task name or the path of a .txt / .jsonl file")

    def like(self, text: str, rng: np.random.Generator) -> tuple[int, str]:
        """(row, text) drawn among the inputs whose length is nearest ``len(text)``."""
        at = bisect.bisect_left(self.lengths, len(text))
        start = min(max(0, at - OOD_WINDOW // 2), len(self.items) - OOD_WINDOW)
        return self.items[start + int(rng.integers(OOD_WINDOW))]


def _file_texts(path: Path) -> list[str]:
    lines = path.read_text("utf-8").splitlines()
    if path.suffix != ".jsonl":
        return lines
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not JSON ({e.msg}); demo_inputs reads one object per line") from None
        text = row.get("text") if isinstance(row, dict) else None
        if text is None and isinstance(row, dict):
            text = next((v for v in row.values() if isinstance(v, str)), None)
        if not isinstance(text, str):
            raise UserError(f"{path} line {n} has no text value; demo_inputs reads 'text' (or the first text value)")
        texts.append(text)
    return texts
