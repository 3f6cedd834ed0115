"""Model backends answering batches of log-likelihood and generation requests."""

from taskfit.api import GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult
from taskfit.models.base import Backend
from taskfit.models.registry import KNOWN_MODELS, load_backend

__all__ = [
    "KNOWN_MODELS",
    "Backend",
    "GenerateRequest",
    "GenerateResult",
    "LoglikelihoodRequest",
    "LoglikelihoodResult",
    "load_backend",
]
