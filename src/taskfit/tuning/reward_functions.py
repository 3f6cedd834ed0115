"""Reward functions over (prompt, answer) texts: a trained reward model, the MiniLM judge, and the length rules.

Every one answers ``score(prompts, answers) -> list[float]`` for parallel lists, so the reward evaluation, RAFT's
selection and the alignment table treat them alike. ``load_reward(spec)`` reads a ``taskfit reward train`` folder
(an LM reward model or a MiniLM one, as its ``reward.json`` says) or one of the rules ``length:shorter`` /
``length:longer`` (the baselines every reward model must beat on the same pairs). A ``--reward`` may list several,
comma-separated, each with an optional weight (``metric:exact_match,length:shorter*0.1``: :func:`reward_specs`);
:class:`WeightedReward` scores their weighted sum. ``metric:NAME`` (a task's own per-example metric) needs the task's
examples and is built by the stage that has them (:mod:`taskfit.tuning.raft`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taskfit.api import Message
from taskfit.errors import UserError
from taskfit.models.reward import REWARD_CONFIG, RewardScorer, load_reward_model
from taskfit.prompting.embeddings import DEFAULT_ENCODER, embed
from taskfit.prompting.preference_tokens import PreferenceTokenizer
from taskfit.prompting.tokens import Tokenizer

Turns = tuple[Message, ...]


class RewardFunction(Protocol):
    name: str

    def score(self, prompts: Sequence[Turns], answers: Sequence[str]) -> list[float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class LengthReward:
    """``shorter``: the shorter answer scores higher; ``longer``: the longer one (lengths in characters)."""

    prefer: str

    @property
    def name(self) -> str:
        return f"length:{self.prefer}"

    def score(self, prompts: Sequence[Turns], answers: Sequence[str]) -> list[float]:
        sign = -1.0 if self.prefer == "shorter" else 1.0
        return [sign * len(a.strip()) for a in answers]

    def describe(self) -> dict[str, Any]:
        return {"kind": "length rule", "prefer": self.prefer}


class LMReward:
    """A reward model folder: prompt + answer rendered by taskfit's renderer, scored at the last token."""

    def __init__(self, folder: str | Path, batch_size: int = 16):
        self.folder = Path(folder)
        self.model, tokenizer, self.config = load_reward_model(self.folder)
        self.renderer = PreferenceTokenizer(Tokenizer(tokenizer, self.config.get("chat_template", True)),
                                            self.config.get("max_length", 512))
        self.scorer = RewardScorer(self.model, batch_size)
        self.name = str(self.folder)

    def score(self, prompts: Sequence[Turns], answers: Sequence[str]) -> list[float]:
        """Each answer after its prompt; answers after the same prompt tokens (K samples of one prompt) share one
        run of the prompt."""
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (prompt, answer) in enumerate(zip(prompts, answers)):
            fitted = self.renderer.fit(prompt, [answer])
            if fitted is not None:
                (ids, prompt_length), = fitted
                groups.setdefault(tuple(ids[:prompt_length]), []).append((i, ids[prompt_length:]))
        scores = [float("nan")] * len(answers)  # a pair too long for the model even without old turns: no score
        values = self.scorer.score_after([list(p) for p in groups], [[c for _, c in g] for g in groups.values()])
        for group, rewards in zip(groups.values(), values):
            for (i, _), value in zip(group, rewards):
                scores[i] = value
        return scores

    def describe(self) -> dict[str, Any]:
        return {"kind": "reward model", "folder": str(self.folder), **self.config,
                "tokenized": dict(self.renderer.counts)}


def judge_text(prompt: Turns, answer: str) -> str:
    """What the MiniLM judge embeds: the last user turn and the answer."""
    last_user = next((m.content for m in reversed(prompt) if m.role == "user"), "")
    return f"{last_user}\n\n{answer}"


class MiniLMReward:
    """A linear reward on sentence embeddings (``taskfit reward train --method minilm``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.config = json.loads((self.folder / REWARD_CONFIG).read_text(encoding="utf-8"))
        self.weights = np.asarray(self.config["weights"], dtype=np.float32)
        self.name = str(self.folder)

    def score(self, prompts: Sequence[Turns], answers: Sequence[str]) -> list[float]:
        vectors = embed([judge_text(p, a) for p, a in zip(prompts, answers)], self.config.get("encoder",
                                                                                             DEFAULT_ENCODER))
        return [float(v) for v in vectors @ self.weights]

    def describe(self) -> dict[str, Any]:
        return {"kind": "minilm judge", "folder": str(self.folder), "encoder": self.config.get("encoder")}


def reward_specs(spec: str | Path) -> list[tuple[str, float]]:
    """``"metric:exact_match,length:shorter*0.1"`` -> ``[("metric:exact_match", 1.0), ("length:shorter", 0.1)]``."""
    parts = []
    for item in str(spec).split(","):
        item = item.strip()
        name, star, weight = item.rpartition("*")
        name, weight = (name.strip(), weight.strip()) if star else (item, "1")
        try:
            value = float(weight)
        except ValueError:
            value = float("nan")
        if not name or value != value:
            raise UserError(f"--reward {spec}: {item!r} is not REWARD or REWARD*WEIGHT; separate rewards with commas, "
                            "e.g. metric:exact_match,length:shorter*0.1")
        parts.append((name, value))
    return parts


@dataclass
class WeightedReward:
    """Several rewards as one: the weighted sum of their scores (NaN when one of them cannot score an answer)."""

    parts: list[tuple[RewardFunction, float]]

    @property
    def name(self) -> str:
        return ",".join(r.name if w == 1 else f"{r.name}*{w:g}" for r, w in self.parts)

    def score(self, prompts: Sequence[Turns], answers: Sequence[str]) -> list[float]:
        total = np.zeros(len(answers))
        for reward, weight in self.parts:
            total += weight * np.asarray(reward.score(prompts, answers), dtype=float)
        return [float(v) for v in total]

    def describe(self) -> dict[str, Any]:
        return {"kind": "weighted sum", "parts": [{**r.describe(), "weight": w} for r, w in self.parts]}


def combine(parts: Sequence[tuple[RewardFunction, float]]) -> RewardFunction:
    """Rewards with weights as one reward function: a single unweighted one as it is, else their weighted sum."""
    if len(parts) == 1 and parts[0][1] == 1:
        return parts[0][0]
    return WeightedReward(list(parts))


def check_reward(spec: str | Path) -> None:
    """Refuse a ``--reward`` that :func:`load_reward` could not load, without loading any model (``metric:`` rewards
    are checked against their task by the stage that builds them)."""
    parts = reward_specs(spec)
    if len(parts) > 1:
        for name, _ in parts:
            check_reward(name)
        return
    text = parts[0][0]
    if text.startswith("metric:"):
        return
    if text.startswith("length:"):
        if text.split(":", 1)[1] not in ("shorter", "longer"):
            raise UserError(f"--reward {text}: use length:shorter or length:longer")
    elif not (Path(text) / REWARD_CONFIG).is_file():
        raise UserError(f"--reward {text}: not a reward model folder ({REWARD_CONFIG} missing); train one with "
                        "`taskfit reward train`, or use length:shorter / length:longer")


def load_reward(spec: str | Path) -> RewardFunction:
    """A reward folder from ``taskfit reward train``, or ``length:shorter`` / ``length:longer`` (several,
    comma-separated with weights: their :class:`WeightedReward`)."""
    check_reward(spec)
    parts = reward_specs(spec)
    if len(parts) > 1 or parts[0][1] != 1:
        return combine([(load_reward(name), weight) for name, weight in parts])
    text = parts[0][0]
    if text.startswith("metric:"):
        raise UserError(f"--reward {text}: a task metric scores answers against a task's gold answers; use it with "
                        "`taskfit align --method raft|grpo|rloo --task NAME`")
    if text.startswith("length:"):
        return LengthReward(text.split(":", 1)[1])
    folder = Path(text)
    kind = json.loads((folder / REWARD_CONFIG).read_text(encoding="utf-8")).get("kind", "lm")
    return MiniLMReward(folder) if kind == "minilm" else LMReward(folder)
