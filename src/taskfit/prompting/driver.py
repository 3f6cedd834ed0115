"""The one generator driver: runs advanced in lock step, their requests batched by type.

:func:`together` combines several runs into one (each round it yields all their pending requests as one list and
hands each run its share of the results); :func:`drive` answers a combined run against a backend, sending every
round's log-likelihood requests in one call and its generation requests in another. Evaluation drives a chunk's
examples this way; self-consistency's paths and contextual calibration's two scorings use :func:`together` inside a
run, so their requests join the same batches.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from taskfit.api import GenerateRequest, LoglikelihoodRequest, Outcome, Request
from taskfit.prompting.context import StrategyRun


def together(runs: Sequence[StrategyRun]) -> Generator[list[Request], list[Any], list[Outcome]]:
    """Advance several runs in lock step, yielding their requests together each round; returns their outcomes."""
    replies: list[Any] = [None] * len(runs)
    outcomes: list[Outcome | None] = [None] * len(runs)
    active = list(range(len(runs)))
    while active:
        asked: dict[int, list[Request]] = {}
        for i in active:
            try:
                asked[i] = runs[i].send(replies[i])
            except StopIteration as done:
                outcomes[i] = done.value
        active = list(asked)
        if not active:
            break
        results = yield [req for i in active for req in asked[i]]
        pos = 0
        for i in active:
            replies[i] = results[pos : pos + len(asked[i])]
            pos += len(asked[i])
    return outcomes  # type: ignore[return-value]


def drive(runs: Sequence[StrategyRun], backend) -> list[Outcome]:
    """Run ``runs`` to their outcomes on ``backend``, one batched backend call per request type per round."""
    combined = together(runs)
    results: list[Any] | None = None
    while True:
        try:
            requests = combined.send(results)
        except StopIteration as done:
            return done.value
        results = answer_requests(requests, backend)


def answer_requests(requests: Sequence[Request], backend) -> list[Any]:
    """Results in request order: all log-likelihood requests in one call, all generation requests in another."""
    results: list[Any] = [None] * len(requests)
    for kind, method in ((LoglikelihoodRequest, backend.loglikelihood), (GenerateRequest, backend.generate)):
        slots = [pos for pos, req in enumerate(requests) if isinstance(req, kind)]
        if slots:
            for pos, result in zip(slots, method([requests[pos] for pos in slots])):
                results[pos] = result
    return results
