"""Prompt building as plain functions: the task's prompt for an example and the gold answer's text.

Evaluation (every strategy's messages), tuning data (``taskfit tune`` trains on exactly this prompt and answer) and,
next, the assistant build prompts here, so a model is trained, evaluated and served with the same text by
construction. The user turn is the instruction, the rendered input, what the task type adds (numbered choices,
retrieved facts) and the output format, one per line.
"""

from __future__ import annotations

from taskfit.api import Example, Message, Prompt, continuation_for
from taskfit.tasks.task import Task


def system_messages(task: Task) -> list[Message]:
    """The task's system prompt as a message (none when the task keeps the model's default)."""
    system = task.config.prompt.system
    return [Message("system", system)] if system else []


def user_text(task: Task, example: Example, mode: str, scored_texts: bool | None = None,
              output_format: str | None = None, instruction: str | None = None) -> str:
    """The user turn for ``example``: instruction, rendered input, the task type's extra text and the output
    format (``output_format`` replaces the task's, e.g. the JSON shape), empty parts left out. ``scored_texts``:
    whether the answers are scored as their own texts (default: in log-likelihood mode, as the text format does)."""
    spec = task.config.prompt
    parts = (spec.instruction if instruction is None else instruction,
             spec.input_template.format(**example.fields),
             task.space.prompt_extra(example, mode == "loglikelihood" if scored_texts is None else scored_texts),
             spec.output_format if output_format is None else output_format)
    return "\n".join(p for p in parts if p)


def task_prompt(task: Task, example: Example, mode: str = "loglikelihood") -> Prompt:
    """The zero-shot prompt of ``example`` in the text answer format: system, user turn, the answer prefix."""
    return Prompt((*system_messages(task), Message("user", user_text(task, example, mode))),
                  task.config.prompt.answer_prefix)


def gold_continuation(task: Task, example: Example, prompt: Prompt) -> str:
    """The gold answer as the continuation a backend scores after ``prompt`` (a space after a non-empty prefix)."""
    return continuation_for(prompt, task.space.word(example))
