"""Read raw rows (dicts) from a local file or a Hugging Face dataset.

Rows stay plain dicts here; a :class:`~taskfit.tasks.task.Task` maps them onto its fields. Errors name the
file and line so a user can fix the data, not guess.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from taskfit.errors import UserError
from taskfit.paths import decode_utf8

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def load_rows(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Load up to ``limit`` rows from a JSONL, CSV or Parquet file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path} (check --data-dir/--split or the task's source)")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _load_jsonl(path, limit)
    if suffix == ".csv":
        return _load_csv(path, limit)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if limit is not None:
            table = table.slice(0, limit)
        return table.to_pylist()
    raise UserError(f"unsupported data file type {suffix!r} for {path}; use one of {', '.join(SUPPORTED_SUFFIXES)}")


def _load_csv(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """A CSV file with a header row; the delimiter (``,`` ``;`` tab ``|``) is detected from the file."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, nrows=limit, keep_default_na=False, sep=None, engine="python",
                            encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                        "save the file as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error) as exc:
        raise UserError(f"{path}: not a readable CSV file with a header row ({str(exc).splitlines()[0]})") from None
    return frame.to_dict(orient="records")


def _load_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            line = decode_utf8(raw, path, line_no)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{line_no}: not valid JSON ({exc.msg}); each line must be one JSON object") \
                    from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def load_hf_rows(path: str, name: str | None, split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Load a split of a Hugging Face dataset (needs network or a warm local cache)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise UserError("the 'datasets' package is needed to load Hugging Face datasets") from exc
    split_spec = split if limit is None else f"{split}[:{limit}]"
    try:
        dataset = datasets.load_dataset(path, name, split=split_spec)
    except Exception as exc:  # datasets raises many types for offline / missing data
        raise UserError(
            f"could not load Hugging Face dataset {path!r} (config {name!r}, split {split!r}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
            "Without network, pass --data-dir with local files instead."
        ) from None
    return [dict(row) for row in dataset]
