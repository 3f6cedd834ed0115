"""Evaluation: one run of an answerer over a task's examples, written to a run folder."""

from taskfit.evaluation.run import evaluate, select_examples

__all__ = ["evaluate", "select_examples"]
