"""The one seeded sampler of rows: which ``k`` of ``total`` rows a run evaluates (``--sample random``) or a tuning
stage trains on (``--limit``). Many data files are sorted by label, so the first rows can be a single class."""

from __future__ import annotations

import hashlib

import numpy as np

STREAM = 0x5A  # keeps row sampling apart from other uses of the run seed


def sample_indices(total: int, k: int, seed: int) -> list[int]:
    """``k`` distinct positions of ``range(total)``, drawn with ``seed``, in data order (all of them if k >= total);
    the same on every machine and numpy version with the PCG64 generator."""
    if k >= total:
        return list(range(total))
    return sorted(int(i) for i in np.random.default_rng([seed, STREAM]).choice(total, k, replace=False))


def sample_seed(seed: int, iteration: int, key: str, k: int) -> int:
    """The seed of answer ``k`` to prompt ``key`` in ``iteration``: the same answer whatever else is sampled beside
    it (RAFT's and align eval's samples stay paired across policies and resumes)."""
    return int(hashlib.sha256(f"{seed}:{iteration}:{key}:{k}".encode()).hexdigest()[:8], 16)
