"""The assistant's model side: the served task's prompt, retrieval, and one backend.

A question becomes an :class:`~taskfit.api.Example` of the served task, and its user turn is
:func:`taskfit.prompting.prompts.user_text` — the text ``taskfit eval`` scored and ``taskfit tune`` trained on, with the
facts the KBQA answer space retrieves for it. Earlier turns of the conversation come before it as plain user /
assistant messages (their questions and answers, not their fact blocks). Without ``--task`` the user turn is the
question, after the retrieved passages when there is a knowledge base.

A prompt that would not leave the answer its room in the model's window is fitted here, never by the backend cutting
its start (which drops the system prompt and the instruction): the oldest earlier turns go first, then the middle of
the question (its beginning and end kept, `` … `` marking the cut). :attr:`Asked.fitted` records what was left out
and what the user is told; the stored prompt is the one the model saw.

With the llamacpp backend an ``--adapter`` is merged and exported to a GGUF file once (kept under
``$TASKFIT_HOME/serve/`` by the adapter's content hash), as ``taskfit export`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskfit.api import Example, GenerateRequest, Message, Prompt
from taskfit.errors import UserError
from taskfit.models.base import Backend
from taskfit.models.registry import load_backend
from taskfit.prompting import prompts
from taskfit.prompting.fitting import prompt_limit, tokens_over
from taskfit.settings import ServeConfig
from taskfit.tasks.retrieval import BM25Index, load_passages
from taskfit.tasks.task import Task, load_task

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
FACTS_HEADER = "Facts:"
CUT_MARK = " … "


class PromptTooLong(ValueError):
    """Even without earlier turns and with the question cut to nothing, the prompt leaves the answer no room."""


@dataclass(frozen=True)
class Asked:
    """What one answer is generated from: the prompt, its rendering, the facts shown, the request, and what was left
    out to fit the model's window (None: nothing)."""

    prompt: Prompt
    rendered: str
    sources: list[str]
    request: GenerateRequest
    fitted: dict[str, Any] | None = None

    def stored_prompt(self) -> dict[str, Any]:
        return {"messages": self.prompt.as_dicts(), "answer_prefix": self.prompt.answer_prefix}

    def settings(self, **extra: Any) -> dict[str, Any]:
        """How the answer is generated, as its turn records it."""
        r = self.request
        return {"temperature": r.temperature, "seed": r.seed, "max_tokens": r.max_tokens, "stop": list(r.stop),
                **extra, **({"fitted": self.fitted} if self.fitted else {})}


class Assistant:
    """Builds each answer's prompt and asks the backend for it."""

    def __init__(self, backend: Backend, *, task: Task | None = None, passages: BM25Index | None = None,
                 top_k: int = 5, max_tokens: int | None = None, temperature: float = 0.0, history_turns: int = 6,
                 model: str = "", adapter: str | None = None):
        self.backend, self.task, self.passages = backend, task, passages
        self.top_k, self.temperature, self.history_turns = top_k, temperature, history_turns
        generation = task.config.generation if task is not None else None
        self.max_tokens = max_tokens or (generation.max_tokens if generation and generation.max_tokens else
                                         DEFAULT_MAX_TOKENS)
        self.stop = tuple(generation.stop) if generation else ()
        self.model, self.adapter = model, adapter

    # ------------------------------------------------------------------ prompts
    def ask(self, question: str, history: Sequence[tuple[str, str]], *, seed: int = 0,
            temperature: float | None = None) -> Asked:
        """The prompt and request for ``question`` after ``history`` ((question, answer) pairs, oldest first),
        fitted to the model's window with room for the answer."""
        history = list(history)[-self.history_turns:] if self.history_turns else []
        prompt, sources = self._prompt(question, history)
        rendered, fitted = self.backend.render(prompt), None
        window = self.backend.context_window()  # None: the backend's server applies its own limit
        limit = None if window is None else prompt_limit(window, self.max_tokens)
        if limit is not None and tokens_over(self.backend, rendered, limit) > limit:
            prompt, sources, fitted = self._fit_to_window(question, history, limit)
            rendered = self.backend.render(prompt)
        chosen = self.temperature if temperature is None else temperature
        request = GenerateRequest(prompt, self.stop, self.max_tokens, chosen, 1.0, seed)
        return Asked(prompt, rendered, sources, request, fitted)

    def _prompt(self, question: str, history: Sequence[tuple[str, str]]) -> tuple[Prompt, list[str]]:
        messages: list[Message] = prompts.system_messages(self.task) if self.task is not None else []
        for earlier, answer in history:
            messages += [Message("user", earlier), Message("assistant", answer)]
        text, sources = self._user_turn(question)
        return Prompt((*messages, Message("user", text)),
                      self.task.config.prompt.answer_prefix if self.task is not None else ""), sources

    def _fit_to_window(self, question: str, history: list[tuple[str, str]],
             limit: int) -> tuple[Prompt, list[str], dict[str, Any]]:
        """Leave out the oldest turns, then the middle of the question, until the prompt fits ``limit`` tokens."""
        dropped = 0
        while history:
            history, dropped = history[1:], dropped + 1
            prompt, sources = self._prompt(question, history)
            if tokens_over(self.backend, self.backend.render(prompt), limit) <= limit:
                return prompt, sources, self._record(limit, dropped, len(question), len(question))

        def cut(n: int) -> str:
            if n >= len(question):
                return question
            tail = n // 2
            return question[:n - tail].rstrip() + CUT_MARK + question[len(question) - tail:].lstrip()

        def fits(n: int) -> bool:
            return tokens_over(self.backend, self.backend.render(self._prompt(cut(n), [])[0]), limit) <= limit

        if not fits(0):
            raise PromptTooLong(f"the prompt does not fit the model's window of {self.backend.context_window()} "
                                f"tokens with {self.max_tokens} for the answer, even without the question")
        low, high = 0, len(question)  # the most characters of the question that fit
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        prompt, sources = self._prompt(cut(low), [])
        return prompt, sources, self._record(limit, dropped, len(question), low)

    def _record(self, limit: int, dropped: int, chars: int, kept: int) -> dict[str, Any]:
        window = self.backend.context_window()
        parts = []
        if kept < chars:
            parts.append(f"the middle of your question was left out ({kept:,} of {chars:,} characters kept)")
        if dropped:
            parts.append(f"{dropped} earlier turn{'s' if dropped > 1 else ''} of this conversation "
                         f"{'were' if dropped > 1 else 'was'} not shown to the model")
        notice = (f"Too long for the model's {window:,}-token window with room for the answer: "
                  + "; ".join(parts) + ".")
        log.info("fitted a prompt to %d tokens: %d earlier turns dropped, question %d -> %d characters", limit,
                 dropped, chars, kept)
        return {"window": window, "prompt_limit": limit, "history_dropped": dropped, "question_chars": chars,
                "question_kept_chars": kept, "notice": notice}

    def _user_turn(self, question: str) -> tuple[str, list[str]]:
        sources: list[str] = []
        facts = ""
        if self.passages is not None:
            sources = [p.as_text() for p, _ in self.passages.search(question, self.top_k)]
            facts = FACTS_HEADER + "\n" + "\n".join(f"- {s}" for s in sources) + "\n\n"
        if self.task is None:
            return facts + question, sources
        example = Example(index=0, fields={name: question for name in self.task.config.fields}, gold="")
        if self.task.space.type == "kbqa":
            sources = [t.as_text() for t in self.task.space.retrieved(example)]
        return facts + prompts.user_text(self.task, example, "generate"), sources

    def swap(self, backend: Backend, model: str, adapter: str | None) -> Backend:
        """Answer from now on with ``backend`` (``model`` + ``adapter``); returns the backend it replaces. Answers
        already streaming hold their backend and finish on it."""
        old, self.backend, self.model, self.adapter = self.backend, backend, model, adapter
        return old

    def identity(self) -> dict[str, Any]:
        return {"model": self.model, "adapter": self.adapter, "task": self.task.name if self.task else None,
                "backend": self.backend.name}


def load_assistant(config: ServeConfig) -> Assistant:
    """The task, knowledge base and backend ``taskfit serve`` was given."""
    return load_assistants(config)[0]


def load_assistants(config: ServeConfig) -> list[Assistant]:
    """The served assistant, then one per arena contestant (``--arena-adapter``, ``--arena-model``): the same task,
    knowledge base and prompt, each with its own backend."""
    task = load_task(config.task) if config.task else None
    passages = None
    if task is not None and task.space.type == "kbqa":
        task.prepare_answers([], config.split, config.data_dir, config.kb)
        log.info("knowledge base: %s", task.space.kb_info)
    elif config.kb is not None:
        passages = BM25Index(load_passages(config.kb))
        log.info("knowledge base: %d passages from %s", len(passages.triples), config.kb)
    elif task is None and config.data_dir is not None:
        raise UserError("--data-dir gives a KBQA task its knowledge base; pass --task too, or --kb FILE")
    served = (config.model, str(config.adapter) if config.adapter else None)
    wanted = [served, *((config.model, str(a)) for a in config.arena_adapter),
              *((m, None) for m in config.arena_model)]
    names = [contestant_name(*w) for w in wanted]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"the arena would have {repeated[0]!r} twice; give each --arena-adapter / --arena-model once "
                        "and not the served model again")
    assistants = []
    for model, adapter in wanted:
        assistants.append(Assistant(backend_for(config, model, adapter), task=task, passages=passages,
                                    top_k=config.top_k, max_tokens=config.max_tokens,
                                    temperature=config.temperature, history_turns=config.history_turns, model=model,
                                    adapter=adapter))
    return assistants


def contestant_name(model: str, adapter: str | None) -> str:
    """The name an answer's votes are counted under: its model, with its adapter folder when it has one."""
    return f"{model} + {adapter}" if adapter else model


def backend_for(config: ServeConfig, model: str, adapter: str | None) -> Backend:
    """``model`` (with ``adapter``) on the server's backend and options, the adapter applied as that backend
    applies one (hf: in process; llamacpp: merged and exported to GGUF once; openai: refused)."""
    return load_backend(config.backend, model, adapter, **config.backend_options())
