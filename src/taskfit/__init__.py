"""taskfit: fit a large language model to your task by prompting or tuning, and measure every way."""

__version__ = "0.1.0"
