"""CARP, Clue And Reasoning Prompting (Sun et al. 2023): clues, then reasoning, then the decision."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from taskfit.api import Example, GenerateRequest, Message, Prompt
from taskfit.errors import UserError
from taskfit.paths import taskfit_home
from taskfit.prompting.context import StrategyContext, StrategyRun
from taskfit.prompting.demos import Demos
from taskfit.prompting.options import CARPOptions
from taskfit.prompting.reasoning import CluesThenDecision, reason_then_answer, sample_and_vote
from taskfit.prompting.strategies.base import Strategy
from taskfit.prompting.templates import fill

log = logging.getLogger(__name__)


class CARP(Strategy):
    """CARP's instruction and clue/reasoning/decision wording; ``n > 1`` samples n paths and votes.

    Few-shot CARP (k > 0) uses kNN demos whose clues and reasoning the model wrote once, given the gold
    label, for the pool examples selected (cached on disk per model and wording).
    """

    name = "carp"
    writes_first = True
    Options = CARPOptions

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.demos = Demos(context, self.opts, self.name)
        if self.demos.ablated:
            raise UserError("CARP's demos carry clues the model wrote from their gold labels and inputs; take "
                            "demonstrations apart (demo_labels, demo_inputs) with few_shot or cot")
        self.step = CluesThenDecision(self.opts)
        self.annotations: dict[int, str] = {}

    def prepare(self, examples: Sequence[Example], backend) -> None:
        if self.opts.k == 0:
            return
        self.demos.prepare(examples)
        needed = sorted({d.index: d for ex in examples for d in self.demos.select(ex)}.items())
        self.annotations = self._annotate([d for _, d in needed], backend)

    def user(self, example: Example) -> str:
        """The task input under CARP's instruction (the task instruction is folded into it)."""
        words = self.task.space.answer_words()
        instruction = fill(self.opts.instruction, task_description=self.task.config.prompt.instruction,
                           labels_or=_or(words), labels=", ".join(words)).strip()
        return self.ask.user_text(example, instruction)

    def demo_answer(self, demo: Example) -> str:
        final = self.ask.fmt.gold(demo)
        return f"{self.opts.clues_prefix} {self.annotations[demo.index].strip()}\n{self.opts.decision_prefix} {final}"

    def run(self, example: Example) -> StrategyRun:
        demos = self.demos.select(example) if self.opts.k else []
        messages = self.demos.messages(self.ask.system_messages(), example, demos, self.user, self.demo_answer)
        if self.opts.n > 1:
            outcome = yield from sample_and_vote(self.ask, self.step, messages, example, self.opts)
        else:
            outcome = yield from reason_then_answer(self.ask, self.step, messages, example)
        return self.demos.record(outcome, demos)

    def _annotate(self, demos: Sequence[Example], backend) -> dict[int, str]:
        """Clues and reasoning for each demo given its gold label, from the disk cache or generated now."""
        describe = backend.describe()
        key_base = json.dumps([describe.get("model"), describe.get("path"), self.opts.annotate_instruction,
                               self.opts.clues_prefix, self.opts.decision_prefix, self.opts.max_reasoning_tokens,
                               self.task.config.prompt.input_template], sort_keys=True)
        path = taskfit_home() / "carp" / (hashlib.sha256(key_base.encode()).hexdigest()[:24] + ".jsonl")
        cache: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    cache[item["key"]] = item["text"]
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by a crash: regenerate that one
        keys = {d.index: hashlib.sha256(json.dumps([d.fields, d.gold], sort_keys=True,
                                                   ensure_ascii=False).encode()).hexdigest()
                for d in demos}
        missing = [d for d in demos if keys[d.index] not in cache]
        if missing:
            log.info("CARP: writing clues and reasoning for %d pool examples (cached in %s)", len(missing), path)
            requests = [GenerateRequest(Prompt(self._annotation_messages(d), self.opts.clues_prefix),
                                        (self.opts.decision_prefix,), self.opts.max_reasoning_tokens)
                        for d in missing]
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                for d, result in zip(missing, backend.generate(requests)):
                    cache[keys[d.index]] = result.text.strip()
                    line = json.dumps({"key": keys[d.index], "text": result.text.strip()}, ensure_ascii=False)
                    handle.write(line + "\n")
        self.info["carp_annotations"] = {"cache": str(path), "generated": len(missing), "used": len(demos)}
        return {d.index: cache[keys[d.index]] for d in demos}

    def _annotation_messages(self, demo: Example) -> tuple[Message, ...]:
        """The prompt that asks for a demo's clues and reasoning, given its gold answer."""
        spec = self.task.config.prompt
        user = fill(self.opts.annotate_instruction, task_description=spec.instruction,
                    gold=self.task.space.word(demo)).strip() + "\n" + spec.input_template.format(**demo.fields)
        extra = self.task.space.prompt_extra(demo, self.ctx.mode == "loglikelihood")
        user = f"{user}\n{extra}" if extra else user
        return (*self.ask.system_messages(), Message("user", user))


def _or(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
