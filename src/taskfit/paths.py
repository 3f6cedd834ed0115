"""Where taskfit keeps what it computes once and reuses: converted models, the response cache, embeddings,
CARP annotations."""

from __future__ import annotations

import os
from pathlib import Path


def taskfit_home() -> Path:
    """Cache root: ``$TASKFIT_HOME`` or ``~/.cache/taskfit``."""
    return Path(os.environ.get("TASKFIT_HOME") or Path.home() / ".cache" / "taskfit")
