"""Cheap hand-made text features that carry difficulty signal embeddings miss (size, notation)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MATH_SYM = re.compile(r"[=+\-*/^_<>|]")
_WORD = re.compile(r"\w+")
_BIG_OPS = re.compile(r"\\(?:sum|prod|int|lim|binom|frac|sqrt|log|sin|cos|tan)\b")
_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("prove", re.compile(r"\b(?:prove|show that)\b", re.I)),
    ("count", re.compile(r"\bhow many\b|\bnumber of\b", re.I)),
    ("prob", re.compile(r"\bprobabilit", re.I)),
    ("max", re.compile(r"\b(?:maxim|minim|greatest|least|largest|smallest)", re.I)),
    ("geom", re.compile(r"\b(?:triangle|circle|angle|square|polygon|area)\b", re.I)),
    ("all", re.compile(r"\b(?:all|every)\b", re.I)),
)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "digit_share",
    "latex_per_100",
    "log_latex",
    "log_dollars",
    "log_math_syms",
    "log_numbers",
    "max_number_digits",
    "questions",
    "log_newlines",
    "upper_share",
    "log_big_ops",
    "non_ascii_share",
    *(f"kw_{k}" for k, _ in _KEYWORDS),
)
N_FEATURES = len(FEATURE_NAMES)


def _one(text: str) -> list[float]:
    """Compute the feature row of one text."""
    n = max(len(text), 1)
    latex = len(_LATEX_CMD.findall(text))
    numbers = _NUMBER.findall(text)
    row = [
        math.log1p(len(text)),
        math.log1p(len(_WORD.findall(text))),
        sum(c.isdigit() for c in text) / n,
        100.0 * latex / n,
        math.log1p(latex),
        math.log1p(text.count("$")),
        math.log1p(len(_MATH_SYM.findall(text))),
        math.log1p(len(numbers)),
        float(max((len(x) for x in numbers), default=0)),
        float(text.count("?")),
        math.log1p(text.count("\n")),
        sum(c.isupper() for c in text) / n,
        math.log1p(len(_BIG_OPS.findall(text))),
        sum(ord(c) > 127 for c in text) / n,
    ]
    row.extend(1.0 if pat.search(text) else 0.0 for _, pat in _KEYWORDS)
    return row


def text_features(texts: Sequence[str]) -> np.ndarray:
    """Return an (n, N_FEATURES) float32 matrix; the model standardises it."""
    if len(texts) == 0:
        return np.zeros((0, N_FEATURES), dtype=np.float32)
    return np.asarray([_one(t) for t in texts], dtype=np.float32)
