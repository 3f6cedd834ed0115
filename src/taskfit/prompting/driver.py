"""Driving strategies: many examples' request generators advanced in lock step, batched by request type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Request


def drive(strategy, examples: Sequence, backend) -> list:
    """Run ``strategy`` on ``examples``; every round, all pending requests of one type go to the backend at once."""
    runs = {ex.index: strategy.run(ex) for ex in examples}
    replies: dict[int, list[Any] | None] = {index: None for index in runs}
    outcomes: dict[int, Any] = {}
    while runs:
        asked: dict[int, list[Request]] = {}
        for index, gen in list(runs.items()):
            try:
                asked[index] = gen.send(replies[index])
            except StopIteration as done:
                outcomes[index] = done.value
                del runs[index]
        if not asked:
            break
        replies.update(answer_all(asked, backend))
    return [outcomes[ex.index] for ex in examples]


def answer_all(asked: dict[int, list[Request]], backend) -> dict[int, list[Any]]:
    """Send all log-likelihood requests in one call and all generation requests in another."""
    answers: dict[int, list[Any]] = {index: [None] * len(reqs) for index, reqs in asked.items()}
    for kind, method in ((LoglikelihoodRequest, backend.loglikelihood), (GenerateRequest, backend.generate)):
        slots = [(index, pos) for index, reqs in asked.items() for pos, req in enumerate(reqs) if isinstance(req, kind)]
        if not slots:
            continue
        results = method([asked[index][pos] for index, pos in slots])
        for (index, pos), result in zip(slots, results):
            answers[index][pos] = result
    return answers
