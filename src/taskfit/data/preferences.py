"""Preference data in one internal form, read from the formats people have.

Two kinds of row: a **pair** (a prompt as chat messages, a chosen and a rejected answer, an optional margin) for
reward models and DPO, and a **rated** row (prompt, completion, desirable or not) for KTO. Pairs become rated rows
(chosen: desirable, rejected: not); rated rows become pairs only where one prompt has both (matched in file order).

Readers, chosen per row by its keys:
- TRL preference, standard ``{"prompt", "chosen", "rejected"}`` (strings) or conversational (message lists), also
  with the prompt implicit (``{"chosen", "rejected"}`` only: the shared leading messages / text are the prompt);
- TRL unpaired preference ``{"prompt", "completion", "label"}`` (strings or message lists);
- LMFlow ``{"type": "paired_conversation", "instances": [{"chosen": {"messages", "system"?},
  "rejected": {...}}]}`` and ``{"type": "text_to_scored_textlist", "instances": [{"input", "output": [{"text",
  "score"}]}]}`` (the best and the worst scored answer, margin = their score difference);
- LLaMA-Factory ranking rows: alpaca ``{"instruction", "input"?, "system"?, "chosen", "rejected"}`` and ShareGPT
  ``{"conversations", "chosen": {"from", "value"}, "rejected": {...}}``; and its ``kto_tag`` rows (alpaca with
  ``output``, ShareGPT / messages whose last turn is the answer);
- HH-RLHF transcripts ``{"chosen": "\\n\\nHuman: … \\n\\nAssistant: …", "rejected": …}`` (split at the last
  Assistant turn, the turns before it shared) and the ``{"prompt", "chosen", "rejected"}`` form of
  ``../shared/data/hh_rlhf`` whose prompt is such a transcript ending in "Assistant:";
- the assistant's feedback export, which is TRL's conversational form (extra keys are kept as ``tags``).

A malformed row is refused with ``file:line: key '…': what is wrong``. Rows that are well formed but unusable
(identical chosen and rejected, an empty answer) are dropped and counted, never silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskfit.api import Message
from taskfit.data.records import alpaca_prompt, messages, read_rows, sharegpt, sharegpt_turn, text
from taskfit.data.sampling import sample_indices
from taskfit.errors import UserError

CONTAINERS = ("paired_conversation", "text_to_scored_textlist")
SHAPES = ('TRL {"prompt", "chosen", "rejected"} or {"prompt", "completion", "label"}, LLaMA-Factory ranking / '
          'kto_tag rows, HH-RLHF transcripts, or LMFlow paired_conversation / text_to_scored_textlist')
TAG_KEYS = ("id", "feedback_id", "conversation", "turn", "model", "adapter", "reason")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


@dataclass(frozen=True)
class PreferencePair:
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    margin: float | None = None
    source: str = ""
    tags: tuple[tuple[str, Any], ...] = ()

    def rated(self) -> list[RatedRow]:
        """The pair as two rated rows: the chosen answer desirable, the rejected one not."""
        return [RatedRow(self.prompt, self.chosen, True, self.source, self.tags),
                RatedRow(self.prompt, self.rejected, False, self.source, self.tags)]


@dataclass(frozen=True)
class RatedRow:
    prompt: tuple[Message, ...]
    completion: str
    label: bool
    source: str = ""
    tags: tuple[tuple[str, Any], ...] = ()


@dataclass
class PreferenceData:
    """What a file held: pairs and rated rows, with counts of what was read and what was dropped and why."""

    pairs: list[PreferencePair] = field(default_factory=list)
    rated: list[RatedRow] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def as_rated(self) -> list[RatedRow]:
        """Every row as a rated row: each pair gives its chosen (desirable) and rejected (undesirable) answer."""
        return [row for p in self.pairs for row in p.rated()] + list(self.rated)

    def as_pairs(self) -> tuple[list[PreferencePair], int]:
        """Every pair, plus rated rows paired where one prompt has a desirable and an undesirable answer (in file
        order: the first of each with the first of the other, and so on); also how many rated rows stay unpaired."""
        out = list(self.pairs)
        good: dict[tuple[Message, ...], list[RatedRow]] = {}
        bad: dict[tuple[Message, ...], list[RatedRow]] = {}
        for row in self.rated:
            (good if row.label else bad).setdefault(row.prompt, []).append(row)
        unpaired = 0
        for prompt in list(good) + [p for p in bad if p not in good]:
            ups, downs = good.get(prompt, []), bad.get(prompt, [])
            out += [PreferencePair(prompt, up.completion, down.completion, None, up.source, up.tags)
                    for up, down in zip(ups, downs)]
            unpaired += abs(len(ups) - len(downs))
        return out, unpaired


def split_by_prompt(items: Sequence[Any], limit: int | None, dev_share: float,
                    seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded sample of ``limit`` rows (pairs or rated rows), then a seeded train / dev split by prompt, so no
    prompt is in both parts."""
    rows = list(items)
    if limit is not None and limit < len(rows):
        rows = [rows[i] for i in sample_indices(len(rows), limit, seed)]
    prompts = list(dict.fromkeys(r.prompt for r in rows))
    held = round(len(prompts) * dev_share)
    dev_prompts = {prompts[i] for i in sample_indices(len(prompts), held, seed + 1)} if held else set()
    return [r for r in rows if r.prompt not in dev_prompts], [r for r in rows if r.prompt in dev_prompts]


def read_preferences(paths: str | Path | Iterable[str | Path]) -> PreferenceData:
    """Pairs and rated rows of one or more preference files, whatever their format (see the module docstring)."""
    data = PreferenceData()
    for path in [paths] if isinstance(paths, str | Path) else paths:
        rows, kind = read_rows(path, "preference file", SHAPES, CONTAINERS)
        for where, row in rows:
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected an object, got {type(row).__name__}")
            _read_row(row, where, kind, data)
    if not data.pairs and not data.rated:
        raise UserError(f"no usable preference rows ({dict(data.dropped)} dropped)")
    return data


def _read_row(row: dict, where: str, kind: str | None, data: PreferenceData) -> None:
    tags = tuple((k, row[k]) for k in TAG_KEYS if k in row)
    if kind == "text_to_scored_textlist":
        return _scored_list(row, where, data)
    if kind == "paired_conversation":
        chosen, rejected = (_container_messages(row, key, where) for key in ("chosen", "rejected"))
        return _add_pair(data, "lmflow paired_conversation", *_split_shared(chosen, rejected, where), None, where, tags)
    if "chosen" in row and "rejected" in row:
        return _pair_row(row, where, data, tags)
    if "label" in row and "completion" in row:
        label = row["label"]
        if not isinstance(label, bool):
            raise UserError(f"{where}: key 'label': must be true or false, got {label!r}")
        prompt = _prompt_field(row, where)
        completion = row["completion"]
        answer = _assistant_text(messages(completion, where, "completion"), where, "completion") \
            if isinstance(completion, list) else text(row, "completion", where)
        return _add_rated(data, "trl unpaired", prompt, answer, label, where, tags)
    if "kto_tag" in row:
        return _kto_tag(row, where, data, tags)
    raise UserError(f"{where}: not a preference row taskfit knows (keys {sorted(row)}); use {SHAPES}")


def _pair_row(row: dict, where: str, data: PreferenceData, tags: tuple) -> None:
    chosen, rejected = row["chosen"], row["rejected"]
    margin = row.get("margin")
    if margin is not None and not isinstance(margin, int | float):
        raise UserError(f"{where}: key 'margin': must be a number, got {margin!r}")
    if "conversations" in row:  # LLaMA-Factory ShareGPT ranking row
        prompt = sharegpt(row, where)
        return _add_pair(data, "llama-factory sharegpt ranking", prompt,
                         sharegpt_turn(chosen, where, "chosen").content,
                         sharegpt_turn(rejected, where, "rejected").content, margin, where, tags)
    if "instruction" in row:  # LLaMA-Factory alpaca ranking row
        return _add_pair(data, "llama-factory alpaca ranking", alpaca_prompt(row, where),
                         text(row, "chosen", where), text(row, "rejected", where), margin, where, tags)
    if isinstance(chosen, list) or isinstance(rejected, list):  # TRL conversational
        chosen_msgs, rejected_msgs = messages(chosen, where, "chosen"), messages(rejected, where, "rejected")
        if "prompt" in row:
            prompt = _prompt_field(row, where)
            return _add_pair(data, "trl conversational", prompt,
                             _assistant_text(chosen_msgs, where, "chosen"),
                             _assistant_text(rejected_msgs, where, "rejected"), margin, where, tags)
        return _add_pair(data, "trl conversational, implicit prompt",
                         *_split_shared(chosen_msgs, rejected_msgs, where), margin, where, tags)
    chosen_text, rejected_text = text(row, "chosen", where), text(row, "rejected", where)
    if "prompt" in row:
        prompt_text = text(row, "prompt", where)
        if _HH_TURN.search(prompt_text):  # ../shared/data/hh_rlhf: the prompt is a transcript ending in Assistant:
            return _add_pair(data, "hh-rlhf prompt/chosen/rejected", _hh_prompt(prompt_text, where, "prompt"),
                             chosen_text.strip(), rejected_text.strip(), margin, where, tags)
        return _add_pair(data, "trl standard", [Message("user", prompt_text)], chosen_text, rejected_text, margin,
                         where, tags)
    if _HH_TURN.search(chosen_text) and _HH_TURN.search(rejected_text):  # HH-RLHF transcripts
        chosen_turns = _hh_turns(chosen_text, where, "chosen")
        rejected_turns = _hh_turns(rejected_text, where, "rejected")
        return _add_pair(data, "hh-rlhf transcripts", *_split_shared(chosen_turns, rejected_turns, where), margin,
                         where, tags)
    shared = _shared_text(chosen_text, rejected_text)  # TRL standard, implicit prompt
    if not shared.strip():
        raise UserError(f"{where}: keys 'chosen'/'rejected': no 'prompt' and no shared beginning to take it from")
    return _add_pair(data, "trl standard, implicit prompt", [Message("user", shared)], chosen_text[len(shared):],
                     rejected_text[len(shared):], margin, where, tags)


def _kto_tag(row: dict, where: str, data: PreferenceData, tags: tuple) -> None:
    label = row["kto_tag"]
    if not isinstance(label, bool):
        raise UserError(f"{where}: key 'kto_tag': must be true or false, got {label!r}")
    if "instruction" in row:
        return _add_rated(data, "llama-factory kto_tag", alpaca_prompt(row, where), text(row, "output", where),
                          label, where, tags)
    turns = sharegpt(row, where) if "conversations" in row else messages(row.get("messages"), where, "messages")
    if turns[-1].role != "assistant":
        raise UserError(f"{where}: key 'kto_tag': the last turn must be the assistant's answer being rated")
    return _add_rated(data, "llama-factory kto_tag", turns[:-1], turns[-1].content, label, where, tags)


def _scored_list(row: dict, where: str, data: PreferenceData) -> None:
    outputs = row.get("output")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("text"), str)
                                                and isinstance(o.get("score"), int | float) for o in outputs):
        raise UserError(f"{where}: key 'output': must be a list of {{text, score}}")
    ranked = sorted(outputs, key=lambda o: -o["score"])
    if len(ranked) < 2 or ranked[0]["score"] == ranked[-1]["score"]:
        data.dropped["fewer than two distinct scores"] += 1
        return
    _add_pair(data, "lmflow text_to_scored_textlist", [Message("user", text(row, "input", where))], ranked[0]["text"],
              ranked[-1]["text"], float(ranked[0]["score"] - ranked[-1]["score"]), where, ())


def _container_messages(row: dict, key: str, where: str) -> list[Message]:
    side = row.get(key)
    if not isinstance(side, dict):
        raise UserError(f"{where}: key {key!r}: must be an object with 'messages'")
    system = [Message("system", text(side, "system", where))] if side.get("system") else []
    return system + messages(side.get("messages"), where, f"{key}.messages")


def _prompt_field(row: dict, where: str) -> list[Message]:
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        return messages(prompt, where, "prompt")
    return [Message("user", text(row, "prompt", where))]


def _assistant_text(turns: list[Message], where: str, key: str) -> str:
    if len(turns) != 1 or turns[0].role != "assistant":
        raise UserError(f"{where}: key {key!r}: with a separate prompt, must be one assistant message")
    return turns[0].content


def _split_shared(chosen: Sequence[Message], rejected: Sequence[Message],
                  where: str) -> tuple[list[Message], str, str]:
    """Two conversations that share their turns up to a final assistant answer: (shared turns, answer, answer)."""
    if not chosen or not rejected or chosen[-1].role != "assistant" or rejected[-1].role != "assistant":
        raise UserError(f"{where}: keys 'chosen'/'rejected': each must end with the assistant's answer")
    if list(chosen[:-1]) != list(rejected[:-1]):
        raise UserError(f"{where}: keys 'chosen'/'rejected': the turns before the last answer differ; a pair needs "
                        "one shared prompt")
    if not chosen[:-1]:
        raise UserError(f"{where}: keys 'chosen'/'rejected': no turns before the answers to serve as the prompt")
    return list(chosen[:-1]), chosen[-1].content, rejected[-1].content


def _hh_turns(transcript: str, where: str, key: str) -> list[Message]:
    """'\\n\\nHuman: … \\n\\nAssistant: …' as chat messages (a trailing empty Assistant turn is kept, empty)."""
    parts = _HH_TURN.split(transcript)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        raise UserError(f"{where}: key {key!r}: an HH-RLHF transcript must start with '\\n\\nHuman:'")
    return [Message("user" if who == "Human" else "assistant", said.strip())
            for who, said in zip(parts[1::2], parts[2::2])]


def _hh_prompt(transcript: str, where: str, key: str) -> list[Message]:
    turns = _hh_turns(transcript, where, key)
    if turns[-1].role != "assistant" or turns[-1].content:
        raise UserError(f"{where}: key {key!r}: an HH-RLHF prompt must end with '\\n\\nAssistant:'")
    return turns[:-1]


def _shared_text(a: str, b: str) -> str:
    """The longest common beginning of two texts, cut back to a whitespace boundary."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n < min(len(a), len(b)):
        while n > 0 and not a[n - 1].isspace():
            n -= 1
    return a[:n]


def _add_pair(data: PreferenceData, fmt: str, prompt: Sequence[Message], chosen: str, rejected: str,
              margin: float | None, where: str, tags: tuple) -> None:
    if not chosen.strip() or not rejected.strip():
        data.dropped["empty answer"] += 1
    elif chosen.strip() == rejected.strip():
        data.dropped["chosen equals rejected"] += 1
    else:
        data.pairs.append(PreferencePair(tuple(prompt), chosen, rejected,
                                         None if margin is None else float(margin), where, tags))
        data.formats[fmt] += 1


def _add_rated(data: PreferenceData, fmt: str, prompt: Sequence[Message], completion: str, label: bool, where: str,
               tags: tuple) -> None:
    if not completion.strip():
        data.dropped["empty answer"] += 1
        return
    data.rated.append(RatedRow(tuple(prompt), completion, label, where, tags))
    data.formats[fmt] += 1


# ------------------------------------------------------------------------------------------------- writing

def _message_dicts(turns: Iterable[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in turns]


def pair_row(pair: PreferencePair) -> dict[str, Any]:
    """A pair in TRL's conversational preference format (what `taskfit align --method dpo` and the reward model
    read; the assistant's feedback export writes it too)."""
    row: dict[str, Any] = {"prompt": _message_dicts(pair.prompt),
                           "chosen": [{"role": "assistant", "content": pair.chosen}],
                           "rejected": [{"role": "assistant", "content": pair.rejected}]}
    if pair.margin is not None:
        row["margin"] = pair.margin
    return row | dict(pair.tags)


def rated_row(row: RatedRow) -> dict[str, Any]:
    """A rated row in TRL's conversational unpaired preference format (what `--method kto` reads)."""
    return {"prompt": _message_dicts(row.prompt), "completion": [{"role": "assistant", "content": row.completion}],
            "label": row.label} | dict(row.tags)
