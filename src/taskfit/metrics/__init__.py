"""Metrics and their confidence intervals."""

from taskfit.metrics.classification import METRICS, MetricValue, compute_metrics

__all__ = ["METRICS", "MetricValue", "compute_metrics"]
