"""Metrics and their confidence intervals (see :mod:`taskfit.metrics.registry`)."""

from taskfit.metrics.registry import METRICS, MetricValue, compute_metrics, metric_value

__all__ = ["METRICS", "MetricValue", "compute_metrics", "metric_value"]
