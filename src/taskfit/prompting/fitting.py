"""Fitting long rows into the model's context window by shortening their input, never the instruction.

A row whose prompt does not fit would otherwise be cut from the left by the backend, dropping the system prompt and
the instruction while ``samples.jsonl`` claimed the whole prompt was seen. Here, before any request, the longest
input field of such a row is cut (its beginning kept, ``…`` marking the cut) until the task's prompt fits with room
for the answer; the example records what was cut (``truncated`` in its sample record, counted in results.json), and
the prompts built from it are exactly what the model reads. The record's ``input`` stays the row's own fields, so
runs on models with different windows still pair up in comparisons.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from taskfit.api import Example
from taskfit.prompting.prompts import task_prompt
from taskfit.tasks.task import Task

log = logging.getLogger(__name__)

MARK = " …"
TEMPLATE_SLACK = 256  # bytes of room kept beyond twice the first row's template text before a row is rendered


def prompt_limit(window: int, reserve: int) -> int:
    """Tokens a prompt may have in a ``window``-token context so that ``reserve`` are left for what follows (at least
    half the window stays the prompt's)."""
    return max(window - reserve, window // 2)


def tokens_over(backend, text: str, limit: int) -> int:
    """Tokens of a rendered prompt, or 0 when its bytes already fit ``limit`` (every token is at least one byte, so
    a short prompt is never tokenized)."""
    return 0 if len(text.encode("utf-8")) <= limit else backend.count_tokens(text)


def fit_examples(examples: Sequence[Example], task: Task, mode: str, backend, reserve: int) -> list[Example]:
    """``examples`` with the longest input field of each row that does not fit shortened so that its prompt leaves
    ``reserve`` tokens of the window free (for the answer, reasoning, demos' slack); the others unchanged."""
    window = backend.context_window() if hasattr(backend, "context_window") else None
    if window is None:  # a server that does not say (or a backend that cannot count): it applies its own limit
        return list(examples)
    limit = prompt_limit(window, reserve)
    template: list[int] = []  # bytes the chat template adds around one row's messages, measured on the first row

    def tokens(example: Example) -> int:
        prompt = task_prompt(task, example, mode)
        own = sum(len(m.content.encode("utf-8")) for m in prompt.messages) + len(prompt.answer_prefix.encode("utf-8"))
        if template and own + 2 * template[0] + TEMPLATE_SLACK <= limit:
            return 0  # far inside the window: skip rendering (a 67k-row demo pool took 9 s through the template)
        text = backend.render(prompt)
        if not template:
            template.append(max(0, len(text.encode("utf-8")) - own))
        return tokens_over(backend, text, limit)

    fitted, cut = [], 0
    for example in examples:
        if not example.fields or tokens(example) <= limit:
            fitted.append(example)
            continue
        fitted.append(_shorten(example, tokens, limit))
        cut += 1
    if cut:
        log.warning("%d of %d rows do not fit the model's %d-token window with %d tokens for the answer; their "
                    "longest input field was shortened (see 'truncated' in samples.jsonl)", cut, len(examples),
                    window, reserve)
    return fitted


def _shorten(example: Example, tokens, limit: int) -> Example:
    """The example with its longest field cut to the longest beginning that fits (binary search on characters)."""
    name = max(example.fields, key=lambda k: len(example.fields[k]))
    text = example.fields[name]

    def with_length(n: int) -> Example:
        return replace(example, fields={**example.fields, name: text[:n].rstrip() + MARK})

    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if tokens(with_length(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return replace(with_length(low), meta={**example.meta, "uncut_fields": example.fields,
                                          "truncated": {"field": name, "chars": len(text), "kept_chars": low}})
