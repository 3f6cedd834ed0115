"""Loading rows from local files (JSONL, CSV, Parquet) or Hugging Face datasets."""

from taskfit.data.loading import load_rows

__all__ = ["load_rows"]
