"""Strategies: how to ask a model about one example, as a generator of request batches.

A strategy's :meth:`Strategy.run` yields a list of requests, receives their results, may yield again
(chain-of-thought asks twice), and finally returns an :class:`Outcome`. The evaluator drives many
examples' generators side by side and sends all their pending requests of one type to the backend as
one batch, so multi-step strategies batch as well as single-step ones. Strategies that need work before
the first example (pool embeddings, CARP demo annotations, APE's instruction search) do it in
:meth:`Strategy.prepare`.

Every strategy's options are a pydantic model (unknown keys rejected) whose wording defaults come from
``templates.yaml``; ``answer_format: json`` makes any strategy ask for ``{"label": ...}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from taskfit.api import (
    Example,
    GenerateRequest,
    LoglikelihoodRequest,
    Message,
    Outcome,
    Prompt,
    Request,
    continuation_for,
)
from taskfit.config import StrictModel, validate
from taskfit.errors import UserError
from taskfit.metrics import metric_value
from taskfit.paths import taskfit_home
from taskfit.prompting import prompts
from taskfit.prompting.driver import drive
from taskfit.prompting.selectors import Selector, make_selector
from taskfit.prompting.templates import default, fill
from taskfit.tasks.answers import json_values
from taskfit.tasks.task import Task

log = logging.getLogger(__name__)

StrategyRun = Generator[list[Request], list[Any], "Outcome"]


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


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (run seed, example index, path ...), the same on every machine."""
    return int(np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


# ---------------------------------------------------------------------------------------------- options
class BaseOptions(StrictModel):
    answer_format: Literal["text", "json"] = "text"
    json_output_format: str | None = Field(None, description="default: templates.yaml json.<task type>")
    json_prefill: bool = Field(True, description='json mode, generate: start the reply with {"key": so the model '
                                                 "writes only the value")
    constrained: bool = Field(True, description="json mode, generate: on backends with constrained decoding "
                                                "(llamacpp), make the reply match the answer's JSON schema")


class DemoOptions(BaseOptions):
    selector: Literal["random", "fixed", "knn"] = "random"
    k: int = Field(4, ge=0)
    order: Literal["as_selected", "similar_last", "shuffled"] | None = None
    indices: list[int] = Field(default_factory=list)
    demo_style: Literal["multi_turn", "single_prompt"] = "multi_turn"
    pool_limit: int | None = Field(None, gt=0, description="use only the first N pool rows")
    encoder: str = "all-minilm-l6-v2"
    knn_field: str | None = None
    calibrate: bool = Field(False, description="contextual calibration of label scores (loglikelihood mode)")
    demos_header: str = Field(default_factory=lambda: default("few_shot", "demos_header"))
    query_header: str = Field(default_factory=lambda: default("few_shot", "query_header"))


class SamplingOptions(StrictModel):
    n: int = Field(1, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    vote: Literal["majority", "weighted"] = "majority"


class CoTOptions(DemoOptions, SamplingOptions):
    k: int = Field(0, ge=0)
    reasoning_trigger: str = Field(default_factory=lambda: default("cot", "reasoning_trigger"))
    answer_trigger: str = Field(default_factory=lambda: default("cot", "answer_trigger"))
    max_reasoning_tokens: int = Field(default_factory=lambda: default("cot", "max_reasoning_tokens"), gt=0)


class SelfConsistencyOptions(CoTOptions):
    n: int = Field(5, ge=1)
    reasoning: bool = True


class CARPOptions(DemoOptions, SamplingOptions):
    k: int = Field(0, ge=0)
    selector: Literal["random", "fixed", "knn"] = "knn"
    instruction: str = Field(default_factory=lambda: default("carp", "instruction"))
    clues_prefix: str = Field(default_factory=lambda: default("carp", "clues_prefix"))
    reasoning_prefix: str = Field(default_factory=lambda: default("carp", "reasoning_prefix"))
    decision_prefix: str = Field(default_factory=lambda: default("carp", "decision_prefix"))
    annotate_instruction: str = Field(default_factory=lambda: default("carp", "annotate_instruction"))
    max_reasoning_tokens: int = Field(default_factory=lambda: default("carp", "max_reasoning_tokens"), gt=0)


class APEOptions(BaseOptions):
    m: int = Field(8, ge=1, description="candidate instructions to propose")
    n_pairs: int = Field(5, ge=1, description="input/output pairs shown to the proposer")
    score_n: int = Field(50, ge=1, description="pool examples each candidate is scored on")
    temperature: float = Field(0.9, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    include_task_instruction: bool = True
    proposal: str = Field(default_factory=lambda: default("ape", "proposal"))
    proposal_prefix: str = Field(default_factory=lambda: default("ape", "proposal_prefix"))
    max_instruction_tokens: int = Field(default_factory=lambda: default("ape", "max_instruction_tokens"), gt=0)


# ---------------------------------------------------------------------------------------------- base
class Strategy:
    """Base class; subclasses register in :data:`STRATEGIES` under ``name`` with their ``Options``."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseOptions]] = BaseOptions
    needs_pool: ClassVar[bool] = False

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        self.ctx = context
        self.task = context.task
        self.opts = validate(self.Options, dict(options or {}), f"strategy_args of {self.name}")
        self.space = self.task.space
        self.space.check_mode(context.mode)
        self.info: dict[str, Any] = {}  # strategy-level facts for results.json

    # -- lifecycle
    def uses_pool(self) -> bool:
        """Whether this run needs the pool split (demonstrations, candidate scoring)."""
        if isinstance(self.opts, DemoOptions):
            return self.opts.k > 0
        return self.needs_pool

    def prepare(self, examples: Sequence[Example], backend) -> None:
        """Work done once before the examples run (default: nothing)."""

    def run(self, example: Example) -> StrategyRun:  # pragma: no cover - interface
        raise NotImplementedError

    # -- prompt pieces
    @property
    def json(self) -> bool:
        return self.opts.answer_format == "json"

    def user_text(self, example: Example, instruction: str | None = None) -> str:
        """The task's user turn (:func:`~taskfit.prompting.prompts.user_text`), with the JSON shape as the output
        format in json mode."""
        return prompts.user_text(self.task, example, self.ctx.mode, self.json,
                                 self.json_format() if self.json else None, instruction)

    def json_format(self) -> str:
        """The output-format line of json mode for this task type (naming the labels, the score range ...)."""
        return fill(self.opts.json_output_format or default("json", self.space.type), **self.space.json_fill())

    def system_messages(self) -> list[Message]:
        return prompts.system_messages(self.task)

    def answer_prefix(self) -> str:
        """Text the assistant's direct answer starts with (none in json mode: the answer is the object)."""
        return "" if self.json else self.task.config.prompt.answer_prefix

    def demo_answer(self, example: Example) -> str:
        """A demonstration's assistant turn: prefix + answer, or the JSON object."""
        if self.json:
            return self.final_answer(example)
        word = self.space.word(example)
        prefix = self.answer_prefix()
        return prefix + continuation_for(Prompt((), prefix), word) if prefix else word

    def final_answer(self, example: Example) -> str:
        """The gold answer as the model should write it: the answer word, or the JSON object in json mode."""
        if self.json:
            return json_values.render_answer(self.space.json_word(example), self.space.json_key)
        return self.space.word(example)

    # -- the two answer modes
    def answer(self, messages: Sequence[Message], prefix: str, example: Example) -> StrategyRun:
        """Answer ``example`` after ``messages`` and the assistant text ``prefix``, in the run's mode and format."""
        if self.ctx.mode == "loglikelihood":
            return (yield from self.answer_by_loglikelihood(messages, prefix, example))
        return (yield from self.answer_by_generation(messages, prefix, example))

    def answer_by_loglikelihood(self, messages: Sequence[Message], prefix: str, example: Example) -> StrategyRun:
        """Score every candidate answer after the prefix; the task type turns the scores into a prediction."""
        words = self.space.candidates(example, self.json)
        if not words:  # e.g. KBQA retrieval found no fact with an answer
            return Outcome(None, False, self.ctx.render(Prompt(tuple(messages), prefix)), {},
                           {"parse_error": "no candidate answers to score"})
        if self.json:
            quote = '"' if self.space.json_quoted else ""
            prompt = Prompt(tuple(messages), _join(prefix, f'{{"{self.space.json_key}": {quote}'))
            continuations = [f"{w}{quote}}}" for w in words]
        else:
            prompt = Prompt(tuple(messages), prefix)
            continuations = [continuation_for(prompt, w) for w in words]
        results = yield [LoglikelihoodRequest(prompt, c) for c in continuations]
        logprobs = [r.logprob for r in results]
        prediction, extra = self.space.from_scores(example, words, logprobs)
        response = extra.pop("scores", None) or dict(zip(words, logprobs))
        return Outcome(prediction, True, self.ctx.render(prompt), response, extra)

    def answer_by_generation(self, messages: Sequence[Message], prefix: str, example: Example,
                             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> StrategyRun:
        """Generate the answer and parse it (the task type's parser, or its JSON parser in json mode)."""
        gen = self.task.config.generation
        budget = self.ctx.max_tokens or (max(gen.max_tokens, 24) if self.json else gen.max_tokens)
        opener = closer = ""
        schema = None
        if self.json and self.opts.constrained and self.ctx.json_schema:
            # The backend's grammar makes the reply a valid object; no prefill, no stop strings needed.
            schema = json.dumps(self.space.json_schema(example), sort_keys=True)
            stop: tuple[str, ...] = ()
            prompt = Prompt(tuple(messages), prefix)
        elif self.json and self.opts.json_prefill:
            # The reply is started for the model: it writes only the value, then the object is closed.
            quote = '"' if self.space.json_quoted else ""
            opener, closer = f'{{"{self.space.json_key}": {quote}', f"{quote}}}"
            stop = ('"',) if quote else ("}", ",", "\n")
            prompt = Prompt(tuple(messages), _join(prefix, opener))
        else:
            stop = () if self.json else tuple(gen.stop)
            prompt = Prompt(tuple(messages), prefix)
        request = GenerateRequest(prompt, stop, budget, temperature, top_p, self.ctx.seed if seed is None else seed,
                                  schema)
        (result,) = yield [request]
        extra: dict[str, Any] = {"generated_tokens": result.n_tokens, "finish_reason": result.finish_reason,
                                 "logprob": result.logprob}
        if self.json:
            prediction, error = self.space.parse_json(opener + result.text + closer if opener else result.text,
                                                      example)
        else:
            prediction, error = self.space.parse(result.text, example)
        if error:
            extra["parse_error"] = error
        return Outcome(prediction, prediction is not None, self.ctx.render(prompt), result.text, extra)


def _join(prefix: str, text: str) -> str:
    if not prefix:
        return text
    return prefix + ("" if prefix[-1].isspace() else " ") + text


class ZeroShot(Strategy):
    """The task's prompt alone, no demonstrations."""

    name = "zero_shot"

    def run(self, example: Example) -> StrategyRun:
        messages = [*self.system_messages(), Message("user", self.user_text(example))]
        return (yield from self.answer(messages, self.answer_prefix(), example))


# ---------------------------------------------------------------------------------------------- few-shot
class FewShot(Strategy):
    """k demonstrations from the pool (random, fixed or kNN), as chat turns or inside one prompt."""

    name = "few_shot"
    Options = DemoOptions
    needs_pool = True
    selector: Selector | None = None

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        if getattr(self.opts, "calibrate", False) and self.space.type != "classification":
            raise UserError(f"calibrate=true adjusts label probabilities: it needs a classification task, "
                            f"not {self.space.type}")

    def prepare(self, examples: Sequence[Example], backend) -> None:
        self.selector = self.build_selector()
        if self.selector is not None:
            self.selector.prepare(examples)

    def build_selector(self) -> Selector | None:
        if self.opts.k == 0:
            return None
        pool = self.ctx.pool or []
        if self.opts.pool_limit:
            pool = pool[: self.opts.pool_limit]
        if not pool:
            raise UserError(f"strategy {self.name} needs demonstrations but the pool split is empty")
        field = self.opts.knn_field or next(iter(self.task.config.fields))
        return make_selector(self.opts.selector, pool, self.opts.k, self.ctx.seed, self.opts.order,
                             self.opts.indices, field, self.opts.encoder)

    def demos(self, example: Example) -> list[Example]:
        return self.selector.select(example) if self.selector else []

    def demo_messages(self, example: Example, demos: Sequence[Example],
                      render_answer: Callable[[Example], str] | None = None,
                      user: Callable[[Example], str] | None = None) -> list[Message]:
        """System, then demos (multi-turn pairs or one block), then the query's user turn."""
        render_answer = render_answer or self.demo_answer
        user = user or self.user_text
        messages = self.system_messages()
        if not demos:
            return [*messages, Message("user", user(example))]
        if self.opts.demo_style == "multi_turn":
            for demo in demos:
                messages += [Message("user", user(demo)), Message("assistant", render_answer(demo))]
            return [*messages, Message("user", user(example))]
        blocks = [f"{user(d)}\n{render_answer(d)}" for d in demos]
        text = "\n\n".join([self.opts.demos_header, *blocks, self.opts.query_header, user(example)])
        return [*messages, Message("user", text)]

    def run(self, example: Example) -> StrategyRun:
        demos = self.demos(example)
        messages = self.demo_messages(example, demos)
        if self.opts.calibrate and self.ctx.mode == "loglikelihood":
            outcome = yield from self.calibrated(example, demos, messages)
        else:
            outcome = yield from self.answer(messages, self.answer_prefix(), example)
        outcome.extra["demos"] = [d.index for d in demos]
        return outcome

    def calibrated(self, example: Example, demos: Sequence[Example], messages: list[Message]) -> StrategyRun:
        """Contextual calibration (Zhao et al. 2021): divide each label's probability by its probability for
        a content-free input ("N/A") under the same demos, which removes the label bias demos induce."""
        content_free = Example(index=example.index, fields={k: "N/A" for k in example.fields}, gold=example.gold,
                               meta=example.meta)
        real, free = yield from _parallel([
            self.answer_by_loglikelihood(messages, self.answer_prefix(), example),
            self.answer_by_loglikelihood(self.demo_messages(content_free, demos), self.answer_prefix(), content_free),
        ])
        adjusted = {k: math.log(real.extra["probs"][k]) - math.log(free.extra["probs"][k]) for k in real.response}
        real.prediction = max(adjusted, key=lambda k: adjusted[k])
        real.extra["content_free_probs"] = free.extra["probs"]
        real.extra["calibrated_scores"] = adjusted
        real.extra["logprob"] = real.response[real.prediction]
        return real


# ---------------------------------------------------------------------------------------------- reasoning
class ChainOfThought(FewShot):
    """Reason first ("Let's think step by step"), then answer after "Therefore, the answer is".

    With ``k > 0`` the demonstrations carry rationales: the task's ``rationale`` field of the pool rows.
    """

    name = "cot"
    Options = CoTOptions
    needs_pool = False

    def prepare(self, examples: Sequence[Example], backend) -> None:
        if self.opts.k > 0:
            if not any(ex.rationale for ex in self.ctx.pool or []):
                raise UserError(f"few-shot {self.name} needs rationales: set 'rationale:' (a data column) in task "
                                f"{self.task.name!r} or write 'demos:' with rationales and use --pool-split demos; "
                                f"or use k=0 for zero-shot {self.name}")
            super().prepare(examples, backend)

    def cot_demo_answer(self, demo: Example) -> str:
        final = self.final_answer(demo)
        if not demo.rationale:
            raise UserError(f"pool example {demo.index + 1} has an empty rationale; few-shot {self.name} needs one")
        return f"{self.opts.reasoning_trigger} {demo.rationale.strip()}\n{self.opts.answer_trigger} {final}"

    def reasoning_request(self, messages: list[Message], temperature: float = 0.0, seed: int = 0) -> GenerateRequest:
        stop = tuple(s for s in (self.opts.answer_trigger, "\n\n\n") if s)
        return GenerateRequest(Prompt(tuple(messages), self.opts.reasoning_trigger), stop,
                               self.opts.max_reasoning_tokens, temperature, self.opts.top_p, seed)

    def answer_after(self, reasoning: str) -> str:
        return f"{self.opts.reasoning_trigger} {reasoning.strip()}\n{self.opts.answer_trigger}"

    def messages_for(self, example: Example) -> tuple[list[Message], list[Example]]:
        demos = self.demos(example)
        return self.demo_messages(example, demos, self.cot_demo_answer), demos

    def run(self, example: Example) -> StrategyRun:
        messages, demos = self.messages_for(example)
        (reasoning,) = yield [self.reasoning_request(messages)]
        outcome = yield from self.answer(messages, self.answer_after(reasoning.text), example)
        outcome.extra.update(rationale=reasoning.text.strip(), reasoning_tokens=reasoning.n_tokens,
                             demos=[d.index for d in demos])
        return outcome


class SelfConsistency(ChainOfThought):
    """n sampled reasoning paths (seeded per path), each answered, then a majority or weighted vote."""

    name = "self_consistency"
    Options = SelfConsistencyOptions

    def run(self, example: Example) -> StrategyRun:
        messages, demos = self.messages_for(example)
        seeds = [derive_seed(self.ctx.seed, example.index, path) for path in range(self.opts.n)]
        if getattr(self.opts, "reasoning", True):
            paths = yield [self.reasoning_request(messages, self.opts.temperature, s) for s in seeds]
            outcomes = yield from self.answer_all([self.answer_after(p.text) for p in paths], messages, example)
            path_logprobs = [p.logprob + (o.extra.get("logprob") or 0.0) if p.logprob is not None else None
                             for p, o in zip(paths, outcomes)]
            rationales = [p.text.strip() for p in paths]
        else:
            if self.ctx.mode != "generate":
                raise UserError("self_consistency with reasoning=false samples answers: use --mode generate")
            outcomes = yield from _parallel([self.answer_by_generation(messages, self.answer_prefix(), example,
                                                                       self.opts.temperature, self.opts.top_p, s)
                                             for s in seeds])
            path_logprobs = [o.extra.get("logprob") for o in outcomes]
            rationales = []
        result = self.space.combine([o.prediction for o in outcomes], path_logprobs, self.opts.vote)
        return Outcome(
            prediction=result.winner,
            parse_ok=result.winner is not None,
            prompt=outcomes[0].prompt,
            response=[o.response for o in outcomes],
            extra={"votes": result.distribution, "path_answers": [o.prediction for o in outcomes],
                   "path_logprobs": path_logprobs, "rationales": rationales, "seeds": seeds,
                   "demos": [d.index for d in demos]},
        )

    def answer_all(self, prefixes: Sequence[str], messages: list[Message],
                   example: Example) -> Generator[Any, Any, list[Outcome]]:
        """Answer after each prefix, all in one round of requests."""
        return (yield from _parallel([self.answer(messages, prefix, example) for prefix in prefixes]))


def _parallel(runs: Sequence[StrategyRun]) -> Generator[list[Request], list[Any], list[Outcome]]:
    """Advance several sub-runs in lock step, yielding their requests together each round."""
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
        flat = [req for i in active for req in asked[i]]
        results = yield flat
        pos = 0
        for i in active:
            replies[i] = results[pos : pos + len(asked[i])]
            pos += len(asked[i])
    return outcomes  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- CARP
class CARP(SelfConsistency):
    """Clue And Reasoning Prompting (Sun et al. 2023): CLUES, then REASONING, then the DECISION.

    Few-shot CARP (k > 0) uses kNN demos whose clues and reasoning the model wrote once, given the gold
    label, for the pool examples selected (cached on disk per model and wording). ``n > 1`` samples n
    clue-and-reasoning paths and votes.
    """

    name = "carp"
    Options = CARPOptions
    needs_pool = True

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.annotations: dict[int, str] = {}

    def prepare(self, examples: Sequence[Example], backend) -> None:
        if self.opts.k == 0:
            return
        FewShot.prepare(self, examples, backend)
        needed = sorted({d.index: d for ex in examples for d in self.demos(ex)}.items())
        self.annotations = self._annotate([d for _, d in needed], backend)

    def carp_user(self, example: Example) -> str:
        """The task input under CARP's instruction (the task instruction is folded into it)."""
        spec = self.task.config.prompt
        words = self.space.answer_words()
        instruction = fill(self.opts.instruction, task_description=spec.instruction, labels_or=_or(words),
                           labels=", ".join(words)).strip()
        return self.user_text(example, instruction)

    def carp_demo_answer(self, demo: Example) -> str:
        final = self.final_answer(demo)
        return f"{self.opts.clues_prefix} {self.annotations[demo.index].strip()}\n{self.opts.decision_prefix} {final}"

    def messages_for(self, example: Example) -> tuple[list[Message], list[Example]]:
        demos = self.demos(example) if self.opts.k else []
        return self.demo_messages(example, demos, self.carp_demo_answer, self.carp_user), demos

    def reasoning_request(self, messages: list[Message], temperature: float = 0.0, seed: int = 0) -> GenerateRequest:
        return GenerateRequest(Prompt(tuple(messages), self.opts.clues_prefix), (self.opts.decision_prefix,),
                               self.opts.max_reasoning_tokens, temperature, self.opts.top_p, seed)

    def answer_after(self, reasoning: str) -> str:
        return f"{self.opts.clues_prefix} {reasoning.strip()}\n{self.opts.decision_prefix}"

    def run(self, example: Example) -> StrategyRun:
        if self.opts.n > 1:
            return (yield from super().run(example))
        return (yield from ChainOfThought.run(self, example))

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
            spec = self.task.config.prompt
            requests = []
            for d in missing:
                user = fill(self.opts.annotate_instruction, task_description=spec.instruction,
                            gold=self.space.word(d)).strip() + "\n" + spec.input_template.format(**d.fields)
                extra = self.space.prompt_extra(d, self.ctx.mode, False)
                user = f"{user}\n{extra}" if extra else user
                messages = (*self.system_messages(), Message("user", user))
                requests.append(GenerateRequest(Prompt(messages, self.opts.clues_prefix), (self.opts.decision_prefix,),
                                                self.opts.max_reasoning_tokens))
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                for d, result in zip(missing, backend.generate(requests)):
                    cache[keys[d.index]] = result.text.strip()
                    line = json.dumps({"key": keys[d.index], "text": result.text.strip()}, ensure_ascii=False)
                    handle.write(line + "\n")
        self.info["carp_annotations"] = {"cache": str(path), "generated": len(missing), "used": len(demos)}
        return {d.index: cache[keys[d.index]] for d in demos}


def _or(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


# ---------------------------------------------------------------------------------------------- APE
class APE(Strategy):
    """Automatic Prompt Engineer (Zhou et al. 2022): the model proposes instructions from input/output
    pairs, each is scored zero-shot on pool examples, and the best one is used for the evaluation."""

    name = "ape"
    Options = APEOptions
    needs_pool = True

    def __init__(self, context: StrategyContext, options: dict[str, Any] | None = None):
        super().__init__(context, options)
        self.instruction = self.task.config.prompt.instruction

    def prepare(self, examples: Sequence[Example], backend) -> None:
        pool = list(self.ctx.pool or [])
        rng = np.random.default_rng([self.ctx.seed, 7])
        order = [pool[i] for i in rng.permutation(len(pool))]
        pairs, scoring = order[: self.opts.n_pairs], order[self.opts.n_pairs : self.opts.n_pairs + self.opts.score_n]
        if not scoring:
            raise UserError(f"APE needs more than n_pairs={self.opts.n_pairs} pool examples to score candidates")
        text_pairs = "\n\n".join(f"Input: {self.task.config.prompt.input_template.format(**p.fields)}\n"
                                 f"Output: {self.space.word(p)}" for p in pairs)
        proposal = Prompt((Message("user", fill(self.opts.proposal, pairs=text_pairs).strip()),),
                          self.opts.proposal_prefix)
        requests = [GenerateRequest(proposal, ("\n",), self.opts.max_instruction_tokens, self.opts.temperature,
                                    self.opts.top_p, derive_seed(self.ctx.seed, 1000 + i)) for i in range(self.opts.m)]
        candidates: list[str] = [self.instruction] if self.opts.include_task_instruction and self.instruction else []
        for result in backend.generate(requests):
            text = result.text.strip().strip('"').strip()
            if text and text not in candidates:
                candidates.append(text)
        metric = self.task.config.metrics[0]
        scored = []
        for candidate in candidates:
            self.instruction = candidate
            outcomes = drive(self, scoring, backend)
            records = [self.task.sample_record(e, o) for e, o in zip(scoring, outcomes)]
            value = metric_value(metric, records, self.task.label_values)
            scored.append({"instruction": candidate, metric: value})
            log.info("APE candidate %s %.3f  %s", metric, value, candidate)
        best = max(scored, key=lambda s: s[metric])  # first of equals: the task's own instruction wins ties
        self.instruction = best["instruction"]
        self.info["ape"] = {"candidates": scored, "best_instruction": best["instruction"], "metric": metric,
                            "best_score": best[metric], "scored_on": len(scoring),
                            "pair_indices": [p.index for p in pairs],
                            "reuse": {"prompt": {"instruction": best["instruction"]}}}

    def run(self, example: Example) -> StrategyRun:
        messages = [*self.system_messages(), Message("user", self.user_text(example, self.instruction))]
        outcome = yield from self.answer(messages, self.answer_prefix(), example)
        outcome.extra["instruction"] = self.instruction
        return outcome


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ZeroShot, FewShot, ChainOfThought, SelfConsistency, CARP, APE)
}


def make_strategy(name: str, context: StrategyContext, options: dict[str, Any] | None = None) -> Strategy:
    """Instantiate strategy ``name`` with its validated options."""
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](context, options)
