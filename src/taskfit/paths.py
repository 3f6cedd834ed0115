"""Where taskfit keeps what it computes once and reuses (converted models, the response cache, embeddings, CARP
annotations); reading a user's text file with an error that says where it is not UTF-8; and the check every command
that writes makes on its output path before any data or model loads (:func:`output_folder`, :func:`output_file`)."""

from __future__ import annotations

import os
import tempfile
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


# ---------------------------------------------------------------------------------------------------- outputs
def output_folder(path: str | Path, flag: str = "--output", *, fresh: bool = False) -> Path:
    """``path`` as a folder a command can write, checked before any work: not a file, not under a file, in a folder
    that can be written (tried, not read off permission bits, which say yes to root on /proc and read-only mounts);
    with ``fresh`` also empty (a new run never mixes its files with another's). Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    _writable_parent(path if path.exists() else path.parent, path, flag)
    if fresh and path.is_dir() and any(path.iterdir()):
        raise UserError(f"{flag} {path} is not empty; choose another {flag} (or delete the folder to start over)")
    return path


def output_file(path: str | Path, flag: str = "--output") -> Path:
    """``path`` as a file a command can write (or replace), checked before any work: not a folder, not under a file,
    in a folder that can be written; an existing file must be writable. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    _writable_parent(path.parent, path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} exists and cannot be written; choose another file")
    return path


def _writable_parent(folder: Path, path: Path, flag: str) -> None:
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder; choose another path")
    if not can_write_in(existing):
        raise UserError(f"{flag} {path}: cannot write in {existing}; choose another path")


def can_write_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder``; the probe is removed at once."""
    try:
        probe = tempfile.mkdtemp(prefix=".taskfit-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True
