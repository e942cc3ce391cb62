"""Datasets own prompts (and, later, their embeddings)."""
