"""A run's per-prompt estimates and counts streamed out as JSONL, CSV or Parquet."""
