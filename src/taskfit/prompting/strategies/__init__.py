"""Strategies: ways of asking a model, one file each, composed from the parts in :mod:`taskfit.prompting`
(an answer format, demonstrations, a reasoning step, sampling and a vote, instruction search)."""

from __future__ import annotations

from typing import Any

from taskfit.errors import UserError
from taskfit.prompting.context import StrategyContext
from taskfit.prompting.options import STRATEGY_OPTIONS
from taskfit.prompting.strategies.ape import APE
from taskfit.prompting.strategies.base import Strategy
from taskfit.prompting.strategies.carp import CARP
from taskfit.prompting.strategies.cot import ChainOfThought
from taskfit.prompting.strategies.few_shot import FewShot
from taskfit.prompting.strategies.plan_and_solve import PlanAndSolve
from taskfit.prompting.strategies.program import Program
from taskfit.prompting.strategies.self_consistency import SelfConsistency
from taskfit.prompting.strategies.zero_shot import ZeroShot

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (ZeroShot, FewShot, ChainOfThought, SelfConsistency, CARP, APE, PlanAndSolve, Program)
}

__all__ = ["STRATEGIES", "Strategy", "StrategyContext", "make_strategy", "register_strategy"]


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` available as ``--strategy cls.name`` (its ``Options`` checked by the run config, its cost prior
    read by ``grid --dry-run``); usable as a class decorator."""
    STRATEGIES[cls.name] = cls
    STRATEGY_OPTIONS[cls.name] = cls.Options
    return cls


def make_strategy(name: str, context: StrategyContext, options: dict[str, Any] | None = None) -> Strategy:
    """Instantiate strategy ``name`` with its validated options."""
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](context, options)
