"""Demonstration selectors: which pool examples a test example sees as demos, and in what order.

All selectors are deterministic given the run seed: ``random`` draws with a generator seeded by (seed,
example index), so the same example gets the same demos on any backend and in any batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from taskfit.api import Example
from taskfit.errors import UserError
from taskfit.prompting.embeddings import embed

Order = Literal["as_selected", "similar_last", "shuffled"]


class Selector:
    """Picks ``k`` demos from ``pool`` for an example; subclasses implement :meth:`_pick`."""

    def __init__(self, pool: Sequence[Example], k: int, seed: int, order: Order = "as_selected"):
        if k > len(pool):
            raise UserError(f"k={k} demonstrations requested but the pool has only {len(pool)} examples")
        self.pool, self.k, self.seed, self.order = list(pool), k, seed, order

    def select(self, example: Example) -> list[Example]:
        """The demos for ``example`` (never the example itself when it is also in the pool)."""
        picked = self._pick(example)
        if self.order == "shuffled":
            rng = np.random.default_rng([self.seed, example.index, 1])
            picked = [picked[i] for i in rng.permutation(len(picked))]
        return picked

    def prepare(self, examples: Sequence[Example]) -> None:
        """Precompute what selection needs for these examples (kNN embeds them in one batch)."""

    def _pick(self, example: Example) -> list[Example]:  # pragma: no cover - interface
        raise NotImplementedError


def _same(a: Example, b: Example) -> bool:
    return a.fields == b.fields


class RandomSelector(Selector):
    """k distinct pool examples drawn with a generator seeded by (seed, example index)."""

    def _pick(self, example: Example) -> list[Example]:
        rng = np.random.default_rng([self.seed, example.index])
        chosen: list[Example] = []
        for i in rng.permutation(len(self.pool)):
            if not _same(self.pool[i], example):
                chosen.append(self.pool[i])
            if len(chosen) == self.k:
                break
        return chosen


class FixedSelector(Selector):
    """The same pool examples, by index, for every test example."""

    def __init__(self, pool: Sequence[Example], k: int, seed: int, order: Order = "as_selected",
                 indices: Sequence[int] = ()):
        super().__init__(pool, k, seed, order)
        if not indices:
            indices = list(range(k))
        bad = [i for i in indices if not 0 <= i < len(self.pool)]
        if bad:
            raise UserError(f"fixed demo indices {bad} are outside the pool (0..{len(self.pool) - 1})")
        self.indices = list(indices)

    def _pick(self, example: Example) -> list[Example]:
        return [self.pool[i] for i in self.indices]


class KNNSelector(Selector):
    """The k pool examples most similar to the test input by cosine similarity of sentence embeddings."""

    def __init__(self, pool: Sequence[Example], k: int, seed: int, order: Order = "similar_last",
                 field: str = "text", encoder: str = "all-minilm-l6-v2", progress: bool = False):
        super().__init__(pool, k, seed, order)
        self.field, self.encoder = field, encoder
        self._embed = embed
        self.pool_vectors = embed([ex.fields[field] for ex in self.pool], encoder, progress=progress)
        self.query: dict[str, np.ndarray] = {}

    def prepare(self, examples: Sequence[Example]) -> None:
        texts = [ex.fields[self.field] for ex in examples if ex.fields[self.field] not in self.query]
        if texts:
            for text, vector in zip(texts, self._embed(texts, self.encoder, cache=False)):
                self.query[text] = vector

    def neighbours(self, example: Example) -> list[tuple[int, float]]:
        """(pool index, cosine similarity), most similar first; ties by pool index; self excluded."""
        text = example.fields[self.field]
        if text not in self.query:
            self.prepare([example])
        sims = self.pool_vectors @ self.query[text]
        order = np.lexsort((np.arange(len(sims)), -sims))
        found = []
        for i in order:
            if _same(self.pool[i], example):
                continue
            found.append((int(i), float(sims[i])))
            if len(found) == self.k:
                break
        return found

    def _pick(self, example: Example) -> list[Example]:
        picked = [self.pool[i] for i, _ in self.neighbours(example)]
        if self.order == "similar_last":
            picked.reverse()
        return picked


def make_selector(kind: str, pool: Sequence[Example], k: int, seed: int, order: Order | None = None,
                  indices: Sequence[int] = (), field: str = "text", encoder: str = "all-minilm-l6-v2") -> Selector:
    """Build a selector by name (``random``, ``fixed``, ``knn``)."""
    if kind == "random":
        return RandomSelector(pool, k, seed, order or "as_selected")
    if kind == "fixed":
        return FixedSelector(pool, k, seed, order or "as_selected", indices)
    if kind == "knn":
        return KNNSelector(pool, k, seed, order or "similar_last", field, encoder)
    raise UserError(f"unknown demo selector {kind!r}; use random, fixed or knn")
