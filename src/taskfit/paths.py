"""Where taskfit keeps what it computes once and reuses (converted models, the response cache, embeddings, CARP
annotations), and reading a user's text file with an error that says where it is not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

from taskfit.errors import UserError


def taskfit_home() -> Path:
    """Cache root: ``$TASKFIT_HOME`` or ``~/.cache/taskfit``."""
    return Path(os.environ.get("TASKFIT_HOME") or Path.home() / ".cache" / "taskfit")


def read_utf8(path: Path) -> str:
    """The text of ``path`` (a UTF-8 BOM is allowed); another encoding or a binary file is a :class:`UserError`
    naming the file, the line and the byte, never a traceback."""
    return decode_utf8(path.read_bytes(), path)


def decode_utf8(data: bytes, path: Path, line_no: int | None = None) -> str:
    """``data`` (a whole file, or line ``line_no`` of it) decoded as UTF-8, or an error that says where it is not."""
    try:
        return data.decode("utf-8-sig" if line_no in (None, 1) else "utf-8")
    except UnicodeDecodeError as exc:
        line = line_no if line_no is not None else data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); is it a binary file or "
                        "saved in another encoding (Latin-1, GBK ...)? save it as UTF-8") from None
