"""Human-readable output: result tables."""
