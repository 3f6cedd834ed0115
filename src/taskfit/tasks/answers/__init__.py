"""Answer spaces: what an answer is for each task type, and how it is asked for, read and scored.

Strategies build prompts and decide how many times to ask; the *last step* — score candidate answers by
log-likelihood, or generate and parse — and the scoring of the result depend on the task type. Each
:class:`AnswerSpace` owns exactly that, so every strategy works on every task type:

| type            | gold                      | log-likelihood mode               | generate mode (text / JSON)      |
|-----------------|---------------------------|-----------------------------------|----------------------------------|
| classification  | label value               | argmax over label verbalizers     | label parser / ``{"label"}``     |
| regression      | float in ``score_range``  | expected value over 0..5 tokens   | first number / ``{"score"}``     |
| multiple_choice | indices of true choices   | argmax over choice texts; MC2     | choice number / ``{"answer": n}``|
| span            | list of gold answers      | (not available)                   | first line / ``{"answer"}``      |
| number          | normalized number string  | (not available)                   | final number / ``{"answer"}``    |
| kbqa            | answer text               | rank retrieved candidate objects  | answer text / ``{"answer"}``     |

:meth:`AnswerSpace.score` turns (example, prediction) into the per-example fields written to
``samples.jsonl`` (``correct``, ``score``, ``em``/``f1``, ``mc2``, ``rr``/``ap``/``rouge_l``), from which every
metric in :mod:`taskfit.metrics.registry` is computed.
"""

from __future__ import annotations

from taskfit.tasks.answers.base import AnswerSpace
from taskfit.tasks.answers.classification import ClassificationSpace
from taskfit.tasks.answers.kbqa import KBQASpace
from taskfit.tasks.answers.multiple_choice import MultipleChoiceSpace
from taskfit.tasks.answers.number import NumberSpace
from taskfit.tasks.answers.regression import RegressionSpace
from taskfit.tasks.answers.span import SpanSpace

ANSWER_SPACES: dict[str, type[AnswerSpace]] = {
    cls.type: cls for cls in (ClassificationSpace, RegressionSpace, MultipleChoiceSpace, SpanSpace, NumberSpace,
                              KBQASpace)
}

__all__ = ["ANSWER_SPACES", "AnswerSpace"]
