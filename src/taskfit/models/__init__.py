"""Model backends answering batches of log-likelihood and generation requests."""

from taskfit.api import GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult
from taskfit.models.base import Backend
from taskfit.models.catalog import KNOWN_MODELS
from taskfit.models.registry import load_backend

__all__ = [
    "KNOWN_MODELS",
    "Backend",
    "GenerateRequest",
    "GenerateResult",
    "LoglikelihoodRequest",
    "LoglikelihoodResult",
    "load_backend",
]
