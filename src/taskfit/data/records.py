"""Rows of the training and preference files users already have: a JSON list, JSONL, or an LMFlow container
``{"type": ..., "instances": [...]}``, each row located by file and line so an error can name it; and the pieces
every row format is made of (strings, chat messages, ShareGPT turns)."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from taskfit.api import Message
from taskfit.errors import UserError
from taskfit.paths import read_utf8

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_rows(path: str | Path, what: str, shapes: str,
              container_types: Collection[str] = ()) -> tuple[list[tuple[str, Any]], str | None]:
    """``(where, row)`` for every row of ``path`` (``where`` = ``file:line``, with the item or instance number for
    JSON documents) and the LMFlow container type (``None`` for a list or JSONL). ``what`` names the file in errors
    ("training file"), ``shapes`` lists the accepted row shapes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    text = read_utf8(path)
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}, column {exc.colno}); "
                                f"each line must be one row: {shapes}") from None
        if not rows:
            raise UserError(f"{path}: the {what} has no rows")
        return rows, None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    if isinstance(document, list):  # alpaca_data.json, ShareGPT dumps: a list of rows
        if not document:
            raise UserError(f"{path}: the list of rows is empty")
        lines = _item_lines(text, text.index("[") + 1, len(document))
        return [(f"{path}:{lines[i]} (item {i + 1})", item) for i, item in enumerate(document)], None
    kinds = " or ".join(container_types) or "a known type"
    if not isinstance(document, dict) or "instances" not in document:
        raise UserError(f'{path}: expected a JSON list, JSONL, or {{"type": {kinds}, "instances": [...]}}')
    kind = document.get("type")
    if kind not in container_types:
        raise UserError(f"{path}: type {kind!r} is not supported here; use {kinds}")
    instances = document["instances"]
    if not isinstance(instances, list) or not instances:
        raise UserError(f"{path}: 'instances' must be a non-empty list")
    lines = _item_lines(text, text.index("[", text.index('"instances"')) + 1, len(instances))
    return [(f"{path}:{lines[i]} (instance {i + 1})", item) for i, item in enumerate(instances)], kind


def _item_lines(text: str, start: int, count: int) -> list[int]:
    """Line where each item of the JSON list opening at ``start`` begins (for error messages)."""
    decoder = json.JSONDecoder()
    lines, pos = [], start
    for _ in range(count):
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
    return lines + [lines[-1] if lines else 1] * (count - len(lines))


def text(row: dict, key: str, where: str) -> str:
    """A string field of a row."""
    value = row.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where}: key {key!r}: missing or not a string")
    return value


def messages(turns: Any, where: str, key: str) -> list[Message]:
    """A non-empty list of ``{role, content}`` chat messages."""
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: key {key!r}: must be a non-empty list of {{role, content}}")
    parsed = []
    for turn in turns:
        role, content = (turn.get("role"), turn.get("content")) if isinstance(turn, dict) else (None, None)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise UserError(f"{where}: key {key!r}: each message needs role system/user/assistant and a string "
                            f"content, got {turn!r}")
        parsed.append(Message(role, content))
    return parsed


def sharegpt_turn(turn: Any, where: str, key: str) -> Message:
    who = turn.get("from") if isinstance(turn, dict) else None
    if who not in SHAREGPT_ROLES or not isinstance(turn.get("value"), str):
        raise UserError(f"{where}: key {key!r}: each ShareGPT turn needs 'from' ({', '.join(SHAREGPT_ROLES)}) and a "
                        f"string 'value', got {turn!r}")
    return Message(SHAREGPT_ROLES[who], turn["value"])


def sharegpt(row: dict, where: str, key: str = "conversations") -> list[Message]:
    """A ShareGPT conversation (``{"from", "value"}`` turns, an optional ``system`` field) as chat messages."""
    turns = row.get(key)
    if not isinstance(turns, list) or not turns:
        raise UserError(f"{where}: key {key!r}: must be a non-empty list of {{from, value}}")
    system = [Message("system", text(row, "system", where))] if row.get("system") else []
    return system + [sharegpt_turn(turn, where, key) for turn in turns]


def alpaca_prompt(row: dict, where: str) -> list[Message]:
    """The prompt of an alpaca row: optional ``system``, then ``instruction`` and ``input`` as one user turn."""
    instruction, extra = text(row, "instruction", where), row.get("input") or ""
    if not isinstance(extra, str):
        raise UserError(f"{where}: key 'input': alpaca 'input' must be a string")
    system = [Message("system", text(row, "system", where))] if row.get("system") else []
    return [*system, Message("user", instruction + (f"\n\n{extra}" if extra.strip() else ""))]
