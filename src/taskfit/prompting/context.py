"""What every part of a strategy shares: the run's settings, the generator type, seeds."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskfit.api import Example, Outcome, Prompt, Request
from taskfit.tasks.task import Task

StrategyRun = Generator[list[Request], list[Any], Outcome]
"""One example's run: yields request batches, receives their results, returns the Outcome."""


@dataclass
class StrategyContext:
    """Run settings a strategy needs besides the example."""

    task: Task
    mode: str
    render: Callable[[Prompt], str]
    seed: int = 0
    max_tokens: int | None = None
    pool: list[Example] | None = None
    progress: bool = False
    json_schema: bool = False  # the backend can constrain generation to a JSON schema
    data_dir: Path | None = None  # where other tasks' rows are read (out-of-domain demo inputs)


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (run seed, example index, path ...), the same on every machine."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)
