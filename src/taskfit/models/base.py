"""The backend protocol: a model answers batches of requests of one type.

As in lm-evaluation-harness, there are two request types: ``loglikelihood`` (how likely is this
continuation after this context?) and ``generate`` (continue this prompt until a stop string). A backend
is one class implementing :meth:`Backend.render`, :meth:`Backend.loglikelihood` and
:meth:`Backend.generate`; it registers itself with :func:`register_backend` under the name
``--backend`` uses. Results come back in request order whatever order the backend computed them in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from taskfit.api import (
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    Prompt,
)
from taskfit.errors import UserError
from taskfit.models.catalog import resolve_model
from taskfit.models.options import BackendOptions


class Backend(ABC):
    """A model that answers batches of requests. Subclasses register with :func:`register_backend`."""

    name: ClassVar[str]
    Options: ClassVar[type[BackendOptions]]  # its options (models/options.py): config keys, CLI flags, keywords
    supports_json_schema: ClassVar[bool] = False  # honours GenerateRequest.json_schema (constrained decoding)
    generate_parallelism: int = 0  # generation requests one call decodes at once, when more help (0: no gain)

    @classmethod
    def resolve(cls, spec: str) -> tuple[str, str]:
        """Map ``--model`` to (display name, what the constructor loads). Default: known models' HF folders."""
        return resolve_model(spec)

    @classmethod
    def prepare_model(cls, model: str, adapter: Path | None) -> tuple[str, dict[str, Any]]:
        """The ``--model`` spec and extra constructor keywords that load ``model`` with ``adapter`` (an adapter
        folder from ``taskfit tune``) on this backend. Default: no adapter taken (the options class says why)."""
        if adapter is not None:
            raise UserError(f"the {cls.name} backend takes no --adapter; {cls.Options.no_adapter}")
        return model, {}

    def generation_slots(self) -> int:
        """Answers this backend generates at once for a server (``taskfit serve``'s default slots)."""
        return 1

    @abstractmethod
    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt`` (chat template applied when enabled)."""

    @abstractmethod
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        """Score every request; results in request order."""

    @abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Answer every request; results in request order."""

    def generate_streaming(self, request: GenerateRequest, emit: Callable[[str], None]) -> GenerateResult:
        """Answer one request, calling ``emit(delta)`` as its text becomes final (the deltas join to the result's
        text). Default: the whole answer in one call; backends that decode here stream token by token."""
        (result,) = self.generate([request])
        if result.text:
            emit(result.text)
        return result

    def describe(self) -> dict[str, Any]:
        """Facts about the loaded model for results.json."""
        return {"backend": self.name}

    def context_window(self) -> int | None:
        """Tokens a prompt and its answer may fill together (None: unknown here, the server decides)."""
        return None

    def count_tokens(self, text: str) -> int:
        """Tokens of a rendered prompt (only asked of backends with a :meth:`context_window`)."""
        raise NotImplementedError


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator: make a backend available as ``--backend name``."""

    def decorate(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return decorate


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string after its leading whitespace; also say whether one was found.

    Leading whitespace is skipped so that a reply opening with a newline (common after an answer prefix
    such as "答案：") is not cut to an empty answer by a "\n" stop.
    """
    start = len(text) - len(text.lstrip())
    positions = [p for p in (text.find(s, start) for s in stop if s) if p >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True


class StreamCutter:
    """Turns a growing answer into the deltas that are safe to show while it is generated.

    Text is final up to the first stop string (after leading whitespace, :func:`cut_at_stop`'s rule); a tail that
    could still grow into a stop string, and a trailing U+FFFD (half of a multi-byte character the tokenizer has
    not finished), are held back. So the deltas always join to a prefix of the final answer.
    """

    def __init__(self, stop: Sequence[str], emit: Callable[[str], None]):
        self.stop = [s for s in stop if s]
        self.emit = emit
        self.sent = ""

    @classmethod
    def streamed(cls, request: GenerateRequest, emit: Callable[[str], None],
                 produce: Callable[[StreamCutter], GenerateResult]) -> GenerateResult:
        """``produce(cutter)`` generates the answer, calling ``cutter.update`` as it grows; the rest is sent at the
        end (each streaming backend's ``generate_streaming`` is this)."""
        cutter = cls(request.stop, emit)
        result = produce(cutter)
        cutter.finish(result.text)
        return result

    def update(self, text: str) -> bool:
        """Show what of ``text`` (the whole answer so far) is final; True once a stop string ended it."""
        cut, found = cut_at_stop(text, self.stop)
        if not found:
            cut = cut[: len(cut) - self._held(cut)]
        self._send(cut.rstrip("\ufffd") if not found else cut)
        return found

    def finish(self, text: str) -> None:
        """The final answer: send what is left of it."""
        self._send(text)

    def _held(self, text: str) -> int:
        start = len(text) - len(text.lstrip())
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text) - start), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            delta, self.sent = text[len(self.sent):], text
            self.emit(delta)


def encode_pair(encode: Callable[[str], list[int]], encode_bare: Callable[[str], list[int]], context: str,
                continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split where the joint encoding splits them (as lm-eval does).

    ``encode`` tokenizes a whole prompt (special tokens as the backend adds them); ``encode_bare`` tokenizes
    a fragment with none, used when the joint encoding does not begin with the context's tokens.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:  # trailing space belongs to the continuation, as BPE vocabularies expect
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = encode(context + continuation)
    ctx = encode(context)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    return ctx, encode_bare(continuation)


def map_in_threads(work: Callable[[Any], Any], items: Sequence[Any], workers: int, desc: str, progress: bool,
                   weight: Callable[[Any], int] = lambda item: 1) -> list[Any]:
    """``work`` over ``items`` on ``workers`` threads (requests to a server), results in item order, with a
    progress bar counting ``weight`` per item."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    bar = tqdm(total=sum(weight(item) for item in items), desc=desc, disable=not progress, leave=False)

    def run(item):
        result = work(item)
        bar.update(weight(item))
        return result

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, items))
    bar.close()
    return results
