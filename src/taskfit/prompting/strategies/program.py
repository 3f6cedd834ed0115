"""Program-aided answers (Gao et al. 2022) with feedback: for number tasks the model writes a short Python program,
taskfit runs it in the sandbox (:mod:`taskfit.prompting.sandbox`), and its ``answer`` is read like any number
answer. An error, a program with no result, or a result that is not a number is fed back as the next user turn, for
up to ``revisions`` new programs (plan -> execute -> feedback -> revise). Every attempt — its program, what it
printed, its result or error, its seconds — is in the sample's ``attempts``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskfit.api import Example, GenerateRequest, Message, Outcome, Prompt
from taskfit.errors import UserError
from taskfit.prompting import prompts
from taskfit.prompting.context import StrategyContext, StrategyRun, derive_seed
from taskfit.prompting.options import ProgramOptions
from taskfit.prompting.sandbox import run_program
from taskfit.prompting.strategies.base import Strategy
from taskfit.prompting.templates import fill

OPENER = "```python\n"


class Program(Strategy):
    name = "program"
    writes_first = True
    Options = ProgramOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        if self.task.config.type != "number":
            raise UserError(f"strategy program writes programs whose result is a number: task {self.task.name!r} "
                            f"is a {self.task.config.type} task; use it with a number task such as gsm8k")
        if self.opts.answer_format != "text":
            raise UserError("strategy program reads the program's result, not a JSON reply: drop answer_format")

    def run(self, example: Example) -> StrategyRun:
        question = prompts.user_text(self.task, example, self.ctx.mode, output_format="",
                                     instruction=self.opts.instruction)
        messages: list[Message] = [*self.ask.system_messages(), Message("user", question)]
        attempts: list[dict[str, Any]] = []
        prediction, tokens = None, 0
        for attempt in range(self.opts.revisions + 1):
            (reply,) = yield [self._request(messages, attempt, example)]
            tokens += reply.n_tokens
            code = _code(reply.text)
            run = run_program(code, self.opts.timeout_s, self.opts.memory_mb)
            record = {"program": code, **run.as_dict()}
            if run.ok:
                prediction, _ = self.ask.space.parse(run.result, example)
                if prediction is not None:
                    attempts.append(record)
                    break
                record.update(ok=False, error=f"the program's answer {run.result!r} is not a number")
                feedback = fill(self.opts.not_a_number, result=run.result)
            else:
                feedback = fill(self.opts.feedback, error=run.error)
            attempts.append(record)
            prediction = None
            messages = [*messages, Message("assistant", f"{OPENER}{code}\n```"), Message("user", feedback)]
        extra = {"attempts": attempts, "revisions_used": len(attempts) - 1, "program_ok": prediction is not None,
                 "generated_tokens": tokens}
        if prediction is None:
            extra["parse_error"] = attempts[-1]["error"]
        final = Prompt(tuple(messages), OPENER)
        return Outcome(prediction, prediction is not None, self.ctx.render(final), attempts[-1]["program"], extra)

    def _request(self, messages: Sequence[Message], attempt: int, example: Example) -> GenerateRequest:
        """The first program greedy; revisions sampled at ``revision_temperature`` (seeded per example and attempt),
        since a small model given its error often writes the same program again when decoding greedily."""
        temperature = 0.0 if attempt == 0 else self.opts.revision_temperature
        return GenerateRequest(Prompt(tuple(messages), OPENER), ("```",), self.opts.max_program_tokens, temperature,
                               0.95 if temperature else 1.0, derive_seed(self.ctx.seed, example.index, attempt),
                               continued=attempt < self.opts.revisions)  # a revision's prompt holds this program


def _code(text: str) -> str:
    """The program in a reply that began inside a ```python block (a stray closing fence removed)."""
    return text.split("```")[0].strip("\n")
